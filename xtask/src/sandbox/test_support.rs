//! Setup shared by the sandbox test modules: a merchant receiver on 127.0.0.1:0, the native
//! sandbox options, and the admin calls every protocol's tests make.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{KeyPairPem, SandboxHandle, SandboxOptions};

/// How long a test waits for a notification or for the stats to settle.
pub(super) const WAIT: Duration = Duration::from_secs(3);

/// A started sandbox, its merchant receiver (`notify_url`) and what the receiver got.
pub(super) struct Env<R> {
    pub sandbox: SandboxHandle,
    pub notify_url: String,
    pub notifications: mpsc::UnboundedReceiver<R>,
    pub http: reqwest::Client,
}

/// Serves `app(tx)` on 127.0.0.1:0 (it must route `POST /notify` and send what it receives
/// on `tx`); returns the notify URL and the receiving end.
pub(super) async fn receiver<R>(
    app: impl FnOnce(mpsc::UnboundedSender<R>) -> Router,
) -> (String, mpsc::UnboundedReceiver<R>) {
    let (tx, notifications) = mpsc::unbounded_channel();
    let app = app(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver bind");
    let notify_url = format!(
        "http://{}/notify",
        listener.local_addr().expect("receiver addr")
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (notify_url, notifications)
}

/// Receiver state: passes every notification on and rejects the first `reject_first`.
pub(super) struct Rejecting<R> {
    tx: mpsc::UnboundedSender<R>,
    reject_left: Arc<AtomicUsize>,
}

impl<R> Clone for Rejecting<R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            reject_left: Arc::clone(&self.reject_left),
        }
    }
}

impl<R> Rejecting<R> {
    pub(super) fn new(tx: mpsc::UnboundedSender<R>, reject_first: usize) -> Self {
        Self {
            tx,
            reject_left: Arc::new(AtomicUsize::new(reject_first)),
        }
    }

    /// Passes `received` on; true when this request is to be rejected.
    pub(super) fn take(&self, received: R) -> bool {
        let _ = self.tx.send(received);
        self.reject_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Native options for merchant `M100` on 127.0.0.1:0.
pub(super) fn native_options(
    merchant: &KeyPairPem,
    provider: &KeyPairPem,
    time_scale: u32,
) -> SandboxOptions {
    SandboxOptions {
        bind: "127.0.0.1:0".parse().expect("addr"),
        merchant_id: "M100".into(),
        merchant_public_key_pem: merchant.public_spki_pem.clone(),
        provider_private_key_pem: provider.private_pkcs8_pem.clone(),
        time_scale,
    }
}

impl<R> Env<R> {
    pub(super) fn new(
        sandbox: SandboxHandle,
        (notify_url, notifications): (String, mpsc::UnboundedReceiver<R>),
    ) -> Self {
        Self {
            sandbox,
            notify_url,
            notifications,
            http: reqwest::Client::new(),
        }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.base_url)
    }

    /// An unsigned admin call: the status and the JSON answer (`null` when there is none).
    pub(super) async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin");
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    pub(super) async fn set_faults(&self, faults: Value) {
        let (status, body) = self.admin(Method::PUT, "/admin/faults", Some(faults)).await;
        assert_eq!(status, 200, "{body}");
    }

    pub(super) async fn stats(&self) -> Value {
        self.admin(Method::GET, "/admin/stats", None).await.1
    }

    pub(super) async fn next_notification(&mut self, within: Duration) -> Option<R> {
        tokio::time::timeout(within, self.notifications.recv())
            .await
            .ok()
            .flatten()
    }

    pub(super) async fn expect_notification(&mut self) -> R {
        self.next_notification(WAIT).await.expect("a notification")
    }
}
