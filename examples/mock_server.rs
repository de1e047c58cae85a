//! Run the embedded Genesys Cloud / NICE CXone mock on its own and print
//! where it listens and which credentials it accepts. Stop with Ctrl-C.
//!
//! Run: `cargo run --example mock_server --features mock`

use tower_cx::mock::MockServer;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mock = MockServer::start().await?;
    let config = mock.config();
    println!("tower-cx mock listening on {}", mock.base_url());
    println!(
        "  Genesys token URL : {}",
        mock.genesys_region().token_url()
    );
    println!("  Genesys API base  : {}", mock.genesys_region().api_base());
    println!("  CXone token URL   : {}", mock.cxone_token_url());
    println!(
        "  CXone discovery   : {}/.well-known/cxone-configuration?tenantId=any",
        mock.base_url()
    );
    println!(
        "  client id/secret  : {} / {}",
        config.client_id, config.client_secret
    );
    println!(
        "  access key        : {} / {}",
        config.access_key_id, config.access_key_secret
    );
    println!(
        "  rate limit        : {} requests per {:?} per token",
        config.rate_limit, config.rate_window
    );
    tokio::signal::ctrl_c().await?;
    println!("counters: {:#?}", mock.counters());
    Ok(())
}
