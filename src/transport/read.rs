//! Bounded reads of response bodies: never more than a limit is buffered.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Limited};

use crate::error::{BodyTooLarge, BoxError};

/// Collect the body of `response`, reading at most `limit` bytes: a longer
/// body fails with [`BodyTooLarge`] (carrying the limit and the response
/// status) as soon as the limit is passed, and the rest is never read; a
/// body error is returned as it is. The crate reads token responses, vendor
/// JSON and error bodies with it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use http::Response;
/// use tower_cx::error::BodyTooLarge;
/// use tower_cx::transport::read_limited;
///
/// let small = Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")));
/// assert_eq!(read_limited(small, 16).await.unwrap(), "{}");
///
/// let big = Response::new(http_body_util::Full::new(bytes::Bytes::from(vec![b'x'; 17])));
/// let err = read_limited(big, 16).await.unwrap_err();
/// assert_eq!(err.downcast_ref::<BodyTooLarge>().unwrap().limit(), 16);
/// # }
/// ```
pub async fn read_limited<B>(response: http::Response<B>, limit: usize) -> Result<Bytes, BoxError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let status = response.status();
    collect_limited(status, response.into_body(), limit).await
}

/// Read a whole body of a response with `status`, failing with
/// [`BodyTooLarge`] past `limit` bytes.
pub(crate) async fn collect_limited<B>(
    status: StatusCode,
    body: B,
    limit: usize,
) -> Result<Bytes, BoxError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(BodyTooLarge::new(limit, status).into())
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_typed_error() {
        let body = http_body_util::Full::new(Bytes::from(vec![b'x'; 100]));
        let err = collect_limited(StatusCode::OK, body, 99).await.unwrap_err();
        let too_large = err.downcast_ref::<BodyTooLarge>().unwrap();
        assert_eq!(too_large.limit(), 99);
        assert_eq!(too_large.status(), StatusCode::OK);
        let body = http_body_util::Full::new(Bytes::from(vec![b'x'; 100]));
        assert_eq!(
            collect_limited(StatusCode::OK, body, 100)
                .await
                .unwrap()
                .len(),
            100
        );
    }
}
