//! Several processes on one Redis: one conversation's events still take effect in arrival
//! order and exactly once, whichever replica received them and whichever runs the lane.

use std::time::Duration;

use crate::helpers::{Backend, Server, Spec, messages_body, texts, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_lanes_in_order_and_once() {
    let backend = Backend::redis();
    let a = Server::start(Spec::new(backend.clone()));
    let b = Server::start(Spec::new(backend));
    let mut sent = Vec::new();
    for i in 0..40 {
        let text = format!("via replicas {i:02}");
        let body = messages_body(&[("15550002000", &format!("wamid.rep{i}"), &text)]);
        let replica = if i % 2 == 0 { &a } else { &b };
        assert_eq!(replica.post_signed(&body).await.status(), 200);
        // Meta's retry lands on the other replica: still once.
        let other = if i % 2 == 0 { &b } else { &a };
        assert_eq!(other.post_signed(&body).await.status(), 200);
        sent.push(text);
    }
    let c = wait_for("all 40 to apply", Duration::from_secs(20), || async {
        a.conversation("15550002000")
            .await
            .filter(|c| c["events_applied"] == 40)
    })
    .await;
    assert_eq!(texts(&c, "customer"), sent);
    let seen_by_b = b.conversation("15550002000").await.unwrap();
    assert_eq!(seen_by_b["events_applied"], 40);
}
