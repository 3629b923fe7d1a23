//! Which route a request names (SPEC §3), from its method and path, before any body is read.
//! Both hosts route with this, so 404 and 405 answers and `HEAD` handling are the same.

use crate::error::Error;
use crate::http::request::Dialect;

/// A route and the path parameters it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /health` (liveness).
    Health,
    /// `GET /ready` (readiness: store and configuration).
    Ready,
    /// `GET /openapi.json` (no authentication).
    OpenApi,
    /// `POST /v1/messaging/otp/request` or `POST /otp/send`.
    Request(Dialect),
    /// `POST /v1/messaging/otp/verify` (no path id) or `POST /otp/{id}/verify`.
    Verify(Dialect, Option<&'a str>),
    /// `GET /v1/messaging/otp/sessions/{id}` or `GET /otp/{id}/status`.
    Status(Dialect, &'a str),
    /// `POST /v1/messaging/otp/sessions/{id}/cancel` or `POST /otp/{id}/cancel`.
    Cancel(Dialect, &'a str),
    /// `POST /v1/messaging/otp/sessions/{id}/resend` or `POST /otp/{id}/resend`.
    Resend(Dialect, &'a str),
    /// `GET /v1/messaging/otp/audit`.
    Audit,
    /// `GET /otp/analytics` (second dialect).
    Analytics,
    /// `POST /v1/admin/workspaces`.
    CreateWorkspace,
    /// `PATCH /v1/admin/workspaces/{id}`.
    PatchWorkspace(&'a str),
    /// `GET /v1/admin/workspaces/{id}`.
    GetWorkspace(&'a str),
    /// `POST /v1/admin/workspaces/{id}/keys`.
    CreateKey(&'a str),
    /// `DELETE /v1/admin/workspaces/{id}/keys/{keyId}`.
    RevokeKey(&'a str, &'a str),
    /// `GET /v1/admin/workspaces` (`?cursor=&limit=`).
    ListWorkspaces,
    /// `GET /v1/admin/analytics` (`?days=&app=`): every workspace's.
    AdminAnalytics,
    /// `GET /v1/admin/workspaces/{id}/fraud`: Fraud Guard's prefixes and blocks.
    GetFraud(&'a str),
    /// `DELETE /v1/admin/workspaces/{id}/fraud/blocks/{prefix}`.
    UnblockPrefix(&'a str, &'a str),
    /// `POST /v1/messaging/otp/delivery-receipts/twilio` (SPEC §8): no API key, Twilio's signature.
    TwilioReceipt,
    /// `POST /v1/messaging/otp/delivery-receipts/json` (SPEC §8): no API key, an HMAC signature.
    JsonReceipt,
    /// `POST /v1/messaging/otp/delivery-receipts/meta`: Meta's WhatsApp status webhook, signed
    /// with the app secret.
    MetaReceipt,
    /// `GET /v1/messaging/otp/delivery-receipts/meta`: Meta's check of the callback URL.
    MetaCheck,
}

impl Route<'_> {
    /// The route's name, as logs and the Node host name it (never the raw path).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Route::Health => "health",
            Route::Ready => "ready",
            Route::OpenApi => "openapi",
            Route::Request(_) => "request",
            Route::Verify(..) => "verify",
            Route::Status(..) => "status",
            Route::Cancel(..) => "cancel",
            Route::Resend(..) => "resend",
            Route::Audit => "audit",
            Route::Analytics => "analytics",
            Route::CreateWorkspace => "createWorkspace",
            Route::PatchWorkspace(_) => "patchWorkspace",
            Route::GetWorkspace(_) => "getWorkspace",
            Route::CreateKey(_) => "createKey",
            Route::RevokeKey(..) => "revokeKey",
            Route::ListWorkspaces => "listWorkspaces",
            Route::AdminAnalytics => "adminAnalytics",
            Route::GetFraud(_) => "getFraud",
            Route::UnblockPrefix(..) => "unblockPrefix",
            Route::TwilioReceipt => "twilioReceipt",
            Route::JsonReceipt => "jsonReceipt",
            Route::MetaReceipt => "metaReceipt",
            Route::MetaCheck => "metaCheck",
        }
    }

    /// A delivery receipt route: authenticated by its signature ([`crate::flow::ReceiptFlow`]),
    /// never by an API key.
    #[must_use]
    pub fn is_receipt(&self) -> bool {
        matches!(
            self,
            Route::TwilioReceipt | Route::JsonReceipt | Route::MetaReceipt | Route::MetaCheck
        )
    }

    /// An operator route (admin token, absent without `ADMIN_TOKEN`).
    #[must_use]
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Route::CreateWorkspace
                | Route::PatchWorkspace(_)
                | Route::GetWorkspace(_)
                | Route::CreateKey(_)
                | Route::RevokeKey(..)
                | Route::ListWorkspaces
                | Route::AdminAnalytics
                | Route::GetFraud(_)
                | Route::UnblockPrefix(..)
        )
    }
}

/// Matches `method` and `path` (without the query string). Unknown paths are 404
/// [`Error::NotFound`]; a known path with another method is 405 [`Error::MethodNotAllowed`];
/// `HEAD` is accepted wherever `GET` is.
pub fn match_route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, Error> {
    let mut parts = [""; 7];
    let mut n = 0usize;
    for part in path.trim_matches('/').split('/') {
        match parts.get_mut(n) {
            Some(slot) => *slot = part,
            None => return Err(Error::NotFound),
        }
        n = n.saturating_add(1);
    }
    let (route, wanted) = match parts.get(..n).unwrap_or(&[]) {
        ["health"] => (Route::Health, "GET"),
        ["ready"] => (Route::Ready, "GET"),
        ["openapi.json"] => (Route::OpenApi, "GET"),
        ["v1", "messaging", "otp", "request"] => (Route::Request(Dialect::V1), "POST"),
        ["v1", "messaging", "otp", "verify"] => (Route::Verify(Dialect::V1, None), "POST"),
        ["v1", "messaging", "otp", "sessions", id] => (Route::Status(Dialect::V1, id), "GET"),
        ["v1", "messaging", "otp", "sessions", id, "cancel"] => {
            (Route::Cancel(Dialect::V1, id), "POST")
        }
        ["v1", "messaging", "otp", "sessions", id, "resend"] => {
            (Route::Resend(Dialect::V1, id), "POST")
        }
        ["v1", "messaging", "otp", "audit"] => (Route::Audit, "GET"),
        ["v1", "messaging", "otp", "delivery-receipts", "twilio"] => (Route::TwilioReceipt, "POST"),
        ["v1", "messaging", "otp", "delivery-receipts", "json"] => (Route::JsonReceipt, "POST"),
        // Two methods on one path: GET (HEAD) is Meta's check of the URL, POST its webhook.
        ["v1", "messaging", "otp", "delivery-receipts", "meta"]
            if matches!(method, "GET" | "HEAD") =>
        {
            (Route::MetaCheck, "GET")
        }
        ["v1", "messaging", "otp", "delivery-receipts", "meta"] => (Route::MetaReceipt, "POST"),
        ["otp", "send"] => (Route::Request(Dialect::Zend), "POST"),
        ["otp", "analytics"] => (Route::Analytics, "GET"),
        ["otp", id, "verify"] => (Route::Verify(Dialect::Zend, Some(id)), "POST"),
        ["otp", id, "status"] => (Route::Status(Dialect::Zend, id), "GET"),
        ["otp", id, "cancel"] => (Route::Cancel(Dialect::Zend, id), "POST"),
        ["otp", id, "resend"] => (Route::Resend(Dialect::Zend, id), "POST"),
        // Two methods on one path: GET (HEAD) lists, POST creates.
        ["v1", "admin", "workspaces"] if matches!(method, "GET" | "HEAD") => {
            (Route::ListWorkspaces, "GET")
        }
        ["v1", "admin", "workspaces"] => (Route::CreateWorkspace, "POST"),
        ["v1", "admin", "analytics"] => (Route::AdminAnalytics, "GET"),
        // Two methods on one path: GET (HEAD) reads, PATCH changes.
        ["v1", "admin", "workspaces", id] if matches!(method, "GET" | "HEAD") => {
            (Route::GetWorkspace(id), "GET")
        }
        ["v1", "admin", "workspaces", id] => (Route::PatchWorkspace(id), "PATCH"),
        ["v1", "admin", "workspaces", id, "keys"] => (Route::CreateKey(id), "POST"),
        ["v1", "admin", "workspaces", id, "keys", key] => (Route::RevokeKey(id, key), "DELETE"),
        ["v1", "admin", "workspaces", id, "fraud"] => (Route::GetFraud(id), "GET"),
        ["v1", "admin", "workspaces", id, "fraud", "blocks", prefix] => {
            (Route::UnblockPrefix(id, prefix), "DELETE")
        }
        _ => return Err(Error::NotFound),
    };
    if wanted == method || (wanted == "GET" && method == "HEAD") {
        Ok(route)
    } else {
        Err(Error::MethodNotAllowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_methods_and_unknown_paths() {
        assert_eq!(match_route("GET", "/health"), Ok(Route::Health));
        assert_eq!(match_route("HEAD", "/health"), Ok(Route::Health));
        assert_eq!(match_route("GET", "/ready"), Ok(Route::Ready));
        assert_eq!(match_route("POST", "/health"), Err(Error::MethodNotAllowed));
        assert_eq!(
            match_route("POST", "/otp/abc/verify"),
            Ok(Route::Verify(Dialect::Zend, Some("abc")))
        );
        assert_eq!(
            match_route("DELETE", "/v1/admin/workspaces/ws_1/keys/key_2"),
            Ok(Route::RevokeKey("ws_1", "key_2"))
        );
        assert_eq!(
            match_route("GET", "/v1/messaging/otp/nope"),
            Err(Error::NotFound)
        );
        assert_eq!(match_route("GET", "/a/b/c/d/e/f/g/h"), Err(Error::NotFound));
        assert_eq!(match_route("GET", "/otp/analytics"), Ok(Route::Analytics));
        assert_eq!(
            match_route("POST", "/v1/messaging/otp/sessions/s1/cancel"),
            Ok(Route::Cancel(Dialect::V1, "s1"))
        );
        assert_eq!(
            match_route("POST", "/otp/s1/cancel"),
            Ok(Route::Cancel(Dialect::Zend, "s1"))
        );
        assert_eq!(
            match_route("POST", "/otp/s1/resend"),
            Ok(Route::Resend(Dialect::Zend, "s1"))
        );
        assert_eq!(
            match_route("POST", "/v1/messaging/otp/sessions/s1/resend"),
            Ok(Route::Resend(Dialect::V1, "s1"))
        );
        assert_eq!(
            match_route("GET", "/otp/s1/cancel"),
            Err(Error::MethodNotAllowed)
        );
        assert_eq!(
            match_route("POST", "/otp/analytics"),
            Err(Error::MethodNotAllowed)
        );
        assert!(match_route("POST", "/v1/admin/workspaces").is_ok_and(|r| r.is_admin()));
        assert_eq!(
            match_route("GET", "/v1/admin/workspaces/ws_1/fraud"),
            Ok(Route::GetFraud("ws_1"))
        );
        assert_eq!(
            match_route("DELETE", "/v1/admin/workspaces/ws_1/fraud/blocks/+233202"),
            Ok(Route::UnblockPrefix("ws_1", "+233202"))
        );
        assert!(match_route("GET", "/v1/admin/workspaces/ws_1/fraud/blocks/1").is_err());
        assert!(match_route("GET", "/v1/admin/workspaces/ws_1/fraud").is_ok_and(|r| r.is_admin()));
        assert_eq!(
            match_route("GET", "/v1/admin/workspaces/ws_1"),
            Ok(Route::GetWorkspace("ws_1"))
        );
        assert_eq!(
            match_route("PATCH", "/v1/admin/workspaces/ws_1"),
            Ok(Route::PatchWorkspace("ws_1"))
        );
        assert_eq!(
            match_route("DELETE", "/v1/admin/workspaces/ws_1"),
            Err(Error::MethodNotAllowed)
        );
    }

    #[test]
    fn admin_listing_and_analytics() {
        let list = match_route("GET", "/v1/admin/workspaces");
        assert_eq!(list, Ok(Route::ListWorkspaces));
        assert!(list.is_ok_and(|r| r.is_admin()));
        assert_eq!(
            match_route("HEAD", "/v1/admin/workspaces/"),
            Ok(Route::ListWorkspaces)
        );
        assert_eq!(
            match_route("POST", "/v1/admin/workspaces"),
            Ok(Route::CreateWorkspace)
        );
        assert_eq!(
            match_route("DELETE", "/v1/admin/workspaces"),
            Err(Error::MethodNotAllowed)
        );
        let analytics = match_route("GET", "/v1/admin/analytics");
        assert_eq!(analytics, Ok(Route::AdminAnalytics));
        assert!(analytics.is_ok_and(|r| r.is_admin()));
        assert_eq!(
            match_route("POST", "/v1/admin/analytics"),
            Err(Error::MethodNotAllowed)
        );
        // The workspace's own analytics route is not an operator route.
        assert!(match_route("GET", "/otp/analytics").is_ok_and(|r| !r.is_admin()));
    }
}
