//! The Graph API calls of onboarding a business number: exchanging an Embedded Signup code
//! for the business's token, reading the number (which checks the token), subscribing the
//! app to the account's webhooks, and requesting the Coexistence syncs of contacts and
//! history (`smb_app_data`, once each; never `/register`, the number is registered in the
//! Business App).

use secrecy::SecretString;
use serde_json::{Value, json};
use tandem_domain::PhoneNumberId;

use crate::client::{GraphClient, SendError};

/// What the Graph API says of a business number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberInfo {
    /// The number as shown to customers.
    pub display_phone_number: Option<String>,
    /// The business's verified name.
    pub verified_name: Option<String>,
    /// True when the number is also on the WhatsApp Business App (Coexistence).
    pub on_business_app: Option<bool>,
}

/// A one-time Coexistence sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncKind {
    /// The Business App's contacts (`smb_app_state_sync`).
    Contacts,
    /// Up to 180 days of past chats (`history`).
    History,
}

impl SyncKind {
    /// The `sync_type` Meta expects.
    pub fn sync_type(self) -> &'static str {
        match self {
            Self::Contacts => "smb_app_state_sync",
            Self::History => "history",
        }
    }
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

impl GraphClient {
    /// Exchanges an Embedded Signup `code` for the business's access token
    /// (`GET /oauth/access_token` with the app's id and secret).
    ///
    /// # Errors
    /// Meta's error (an expired or used code is a [`SendError::Graph`]), or an answer
    /// without a token.
    pub async fn exchange_code(
        &self,
        app_id: &str,
        app_secret: &SecretString,
        code: &str,
    ) -> Result<SecretString, SendError> {
        use secrecy::ExposeSecret;
        let query = [
            ("client_id", app_id),
            ("client_secret", app_secret.expose_secret()),
            ("code", code),
        ];
        let answer = self
            .call(
                reqwest::Method::GET,
                "oauth/access_token",
                &query,
                None,
                None,
            )
            .await?;
        text(&answer, "access_token")
            .map(SecretString::from)
            .ok_or_else(|| SendError::BadResponse("no access_token in the answer".into()))
    }

    /// Reads a number with `token` (checks that the token may manage it).
    ///
    /// # Errors
    /// Meta's error: an invalid or expired token (190), missing permission (200…).
    pub async fn number_info(
        &self,
        number: &PhoneNumberId,
        token: &SecretString,
    ) -> Result<NumberInfo, SendError> {
        let query = [(
            "fields",
            "display_phone_number,verified_name,is_on_biz_app,platform_type",
        )];
        let answer = self
            .call(
                reqwest::Method::GET,
                number.as_str(),
                &query,
                None,
                Some(token),
            )
            .await?;
        Ok(NumberInfo {
            display_phone_number: text(&answer, "display_phone_number"),
            verified_name: text(&answer, "verified_name"),
            on_business_app: answer.get("is_on_biz_app").and_then(Value::as_bool),
        })
    }

    /// Subscribes the app to the business account's webhooks (`POST /{waba}/subscribed_apps`).
    ///
    /// # Errors
    /// Meta's error, or an answer other than `{"success": true}`.
    pub async fn subscribe_app(&self, waba: &str, token: &SecretString) -> Result<(), SendError> {
        let path = format!("{waba}/subscribed_apps");
        let answer = self
            .call(reqwest::Method::POST, &path, &[], None, Some(token))
            .await?;
        match answer.get("success").and_then(Value::as_bool) {
            Some(true) => Ok(()),
            _ => Err(SendError::BadResponse(format!(
                "expected {{\"success\":true}}, got {answer}"
            ))),
        }
    }

    /// Requests a one-time Coexistence sync (`POST /{number}/smb_app_data`); answers Meta's
    /// request id.
    ///
    /// # Errors
    /// Meta's error (a sync already requested, a number past its sync window), or an answer
    /// without a request id.
    pub async fn request_sync(
        &self,
        number: &PhoneNumberId,
        kind: SyncKind,
        token: &SecretString,
    ) -> Result<String, SendError> {
        let path = format!("{number}/smb_app_data");
        let body = json!({"messaging_product": "whatsapp", "sync_type": kind.sync_type()});
        let answer = self
            .call(reqwest::Method::POST, &path, &[], Some(&body), Some(token))
            .await?;
        text(&answer, "request_id")
            .ok_or_else(|| SendError::BadResponse(format!("no request_id in {answer}")))
    }
}
