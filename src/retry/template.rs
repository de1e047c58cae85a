//! The copy of a request kept for its retries.

use http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::body::ReplayBody;

/// What a retry sends again: the request's parts and a copy of its body,
/// taken before the first attempt.
///
/// It is leaner than a [`Request`] clone because most requests never send
/// it: the headers are kept as a list (one allocation, where a
/// [`HeaderMap`] clone makes two, its index table and its entries), and
/// the map is rebuilt only when a retry is actually sent. The extensions
/// are copied only when asked (a layer that puts the request's one entry
/// back on each attempt saves the copy of a map).
pub(crate) struct Template<B> {
    method: Method,
    uri: Uri,
    version: Version,
    /// Every header value in the map's order (a name repeats for each of
    /// its values).
    headers: Vec<(HeaderName, HeaderValue)>,
    extensions: Extensions,
    body: B,
}

impl<B: ReplayBody> Template<B> {
    /// A copy of `request` (its extensions only if `with_extensions`), or
    /// `None` if its body cannot be replayed.
    pub(crate) fn of(request: &Request<B>, with_extensions: bool) -> Option<Self> {
        let body = request.body().try_clone_body()?;
        // (sized once: the map knows how many values it holds)
        let mut headers = Vec::with_capacity(request.headers().len());
        for (name, value) in request.headers() {
            headers.push((name.clone(), value.clone()));
        }
        let extensions = if with_extensions {
            request.extensions().clone()
        } else {
            Extensions::new()
        };
        Some(Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers,
            extensions,
            body,
        })
    }

    /// A request to send again, or `None` if the body's copy fails (a bug
    /// in its [`ReplayBody`] impl: the first copy succeeded).
    pub(crate) fn request(&self) -> Option<Request<B>> {
        let body = self.body.try_clone_body()?;
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = headers;
        *request.extensions_mut() = self.extensions.clone();
        Some(request)
    }
}

impl<B> Template<B> {
    /// The request's method.
    pub(crate) fn method(&self) -> &Method {
        &self.method
    }

    /// The request's URI.
    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Whether the request carries a header named `name`.
    pub(crate) fn has_header(&self, name: &HeaderName) -> bool {
        self.headers.iter().any(|(n, _)| n == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Body;

    #[derive(Clone, Debug, PartialEq)]
    struct Marker(u32);

    fn request() -> Request<Body> {
        let mut request = Request::builder()
            .method(Method::PUT)
            .uri("http://127.0.0.1/x?y=1")
            .version(Version::HTTP_2)
            .header("x-a", "1")
            .header("accept", "text/plain")
            .header("x-a", "2")
            .body(Body::from("payload"))
            .unwrap();
        request.extensions_mut().insert(Marker(7));
        request
    }

    #[test]
    fn a_retry_sends_the_same_request() {
        let original = request();
        let template = Template::of(&original, true).expect("replayable");
        let copy = template.request().expect("replayable");
        assert_eq!(copy.method(), Method::PUT);
        assert_eq!(copy.uri(), "http://127.0.0.1/x?y=1");
        assert_eq!(copy.version(), Version::HTTP_2);
        assert_eq!(copy.headers(), original.headers());
        let values: Vec<_> = copy.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(copy.extensions().get::<Marker>(), Some(&Marker(7)));
        assert_eq!(copy.body().as_bytes().unwrap(), "payload");
        assert!(template.has_header(&HeaderName::from_static("accept")));
        assert!(!template.has_header(&HeaderName::from_static("x-b")));
    }

    #[test]
    fn extensions_are_left_out_when_asked() {
        let template = Template::of(&request(), false).expect("replayable");
        let copy = template.request().expect("replayable");
        assert!(copy.extensions().is_empty());
    }

    #[test]
    fn a_streaming_body_is_not_copied() {
        let request = Request::new(Body::from_stream(
            http_body_util::Empty::<bytes::Bytes>::new(),
        ));
        assert!(Template::of(&request, true).is_none());
    }
}
