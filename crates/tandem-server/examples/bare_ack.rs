//! The benchmark baseline: an axum server whose `POST /webhook` reads the body and answers
//! 200, doing nothing else. `bench/webhook.sh` measures Tandem against it in the same run.
//!
//! Usage: `cargo run --release -p tandem-server --example bare_ack -- 127.0.0.1:0`

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;

async fn ack(body: Bytes) -> &'static str {
    std::hint::black_box(body);
    "ok"
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    #[allow(clippy::print_stdout)]
    {
        println!("bare listening on http://{}", listener.local_addr()?);
    }
    let app = Router::new()
        .route("/webhook", post(ack))
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024));
    axum::serve(listener, app).await?;
    Ok(())
}
