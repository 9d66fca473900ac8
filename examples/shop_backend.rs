//! A stand-in of the example shop's backend, for trying the shipped flows' `call` steps:
//!
//!   cargo run --example shop_backend            # listens on 127.0.0.1:8099 (config.shop_api)
//!   cargo run -- chat flows                     # then: "where is my order", "10442"
//!
//! Orders 10442 (shipped) and 10443 (delivered) exist; returns get the id R-881.
#![allow(clippy::print_stdout, clippy::expect_used)]

#[path = "../tests/support/shop.rs"]
mod shop;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8099".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("binding the address");
    println!("shop backend stand-in on http://{addr} (orders 10442, 10443; POST /returns)");
    let app = shop::router(
        std::time::Duration::ZERO,
        shop::Calls::default(),
        shop::Held::default(),
    );
    axum::serve(listener, app).await.expect("serving");
}
