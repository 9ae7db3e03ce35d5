//! Browser sessions at the edge: the sign-in flow (a navigation without a usable session goes to
//! the issuer's `/authorize` with PKCE, `state` and `nonce`; `/_portcullis/callback` exchanges the
//! code and starts the session), the session cookie on every request (its access token used as it
//! is while it is good, refreshed through the session's object when it has nearly expired), and
//! logout. The decisions and formats are [`crate::session`]'s.

use super::session_object::{session_call, token_request};
use super::{Edge, now_ms, sealing};
use crate::config::SessionSettings;
use crate::decision::Refusal;
use crate::reply::{Reply, event_log};
use crate::request::{RequestHead, same_secret};
use crate::session::{
    self, CSRF_COOKIE, FLOW_COOKIE_PREFIX, FLOW_LIFETIME_SECS, Flow, SESSION_COOKIE, SessionCookie, SessionTokens,
    clear_cookie, set_cookie,
};
use jwks::{ClaimsOptions, Validator};
use serde_json::json;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use worker::console_log;

/// How long the browser keeps the session cookie (the session object ends it sooner when the
/// issuer refuses a refresh): 30 days.
const SESSION_COOKIE_SECS: u64 = 30 * 24 * 60 * 60;

/// A page the sign-in could not complete: 400 with a generic body and a fresh start offered.
fn sign_in_failed(reason: &str) -> Reply {
    console_log!("{}", event_log("sign_in_failed", json!({ "reason": reason })));
    Reply::text(400, "the sign-in could not be completed; open the page again to start over")
}

impl Edge {
    /// The redirect that starts a sign-in from `head` (a navigation): a new flow sealed into its own
    /// cookie (older ones cleared past a few), and the issuer's `/authorize` URL.
    pub(super) async fn begin_sign_in(&self, settings: &SessionSettings, head: &RequestHead<'_>) -> Reply {
        let url = head.url_parts();
        let target = format!("{}{}", url.path, url.query);
        let return_to = session::safe_return_path(&target).unwrap_or("/").to_owned();
        let (Some(state), Some(verifier), Some(nonce)) =
            (sealing::random_token(), sealing::random_token(), sealing::random_token())
        else {
            return crate::reply::internal_error_reply();
        };
        let flow = Flow { verifier, nonce, return_to, expires_at: now_ms() / 1000 + FLOW_LIFETIME_SECS };
        let name = format!("{FLOW_COOKIE_PREFIX}{state}");
        let sealed = sealing::seal(&settings.cookie_keys, &name, flow.encode().as_bytes()).await;
        let (Some(sealed), Some(challenge)) = (sealed, sealing::sha256_base64url(flow.verifier.as_bytes()).await)
        else {
            return crate::reply::internal_error_reply();
        };
        let location = session::authorize_url(
            &settings.authorize_endpoint,
            &settings.client_id,
            &session::callback_url(head),
            &settings.scope,
            &state,
            &challenge,
            &flow.nonce,
        );
        let mut reply = Reply::text(302, "sign-in required");
        reply.headers.push(("location", location));
        for cookie in session::flow_cookies(&session::flow_cookie_names(head), &state, &sealed) {
            reply.headers.push(("set-cookie", cookie));
        }
        reply
    }

    /// `GET /_portcullis/callback`: checks `state` against its flow's cookie, exchanges the code
    /// (with the flow's PKCE verifier), checks the ID token's `nonce` and the access token, starts
    /// the session's object, sets the session cookie and sends the browser back where it was going.
    pub(super) async fn callback(
        &self,
        settings: &SessionSettings,
        head: &RequestHead<'_>,
        env: &JsValue,
        ctx: &worker::Context,
    ) -> Reply {
        let query = head.url_parts().query;
        if let Some(error) = session::form_value(query, "error") {
            let error: String = error.chars().take(64).collect();
            return sign_in_failed(&format!("the issuer answered {error}"));
        }
        let (Some(state), Some(code)) = (session::form_value(query, "state"), session::form_value(query, "code"))
        else {
            return sign_in_failed("no state or no code");
        };
        if !session::is_flow_state(&state) {
            return sign_in_failed("a state the edge never gave");
        }
        let name = format!("{FLOW_COOKIE_PREFIX}{state}");
        let Some(sealed) = head.cookie(&name) else {
            return sign_in_failed("no flow cookie for this state");
        };
        let flow = match sealing::open(&settings.cookie_keys, &name, sealed).await {
            Some(plain) => String::from_utf8(plain).ok().and_then(|plain| Flow::decode(&plain)),
            None => None,
        };
        let Some(flow) = flow.filter(|flow| flow.expires_at > now_ms() / 1000) else {
            return sign_in_failed("the flow cookie does not open or has expired");
        };
        let form = format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
            crate::reply::percent_encode(&code),
            crate::reply::percent_encode(&session::callback_url(head)),
            crate::reply::percent_encode(&flow.verifier),
        );
        let answer = match token_request(settings, &form).await {
            Ok(answer) => answer,
            Err(status) => return sign_in_failed(&format!("the code exchange failed ({status:?})")),
        };
        let Some(tokens) = SessionTokens::from_token_response(&answer, now_ms() / 1000, None) else {
            return sign_in_failed("the issuer gave no access or no refresh token");
        };
        let Some(id_token) = &tokens.id_token else {
            return sign_in_failed("the issuer gave no ID token");
        };
        if let Err(reason) = self.check_tokens(settings, &tokens.access_token, id_token, &flow.nonce, ctx).await {
            return sign_in_failed(&reason);
        }
        let (Some(session_id), Some(csrf)) = (sealing::random_token(), sealing::random_token()) else {
            return crate::reply::internal_error_reply();
        };
        if !matches!(session_call(env, &session_id, "/start", &tokens.encode()).await, Some((200, _))) {
            return crate::reply::internal_error_reply();
        }
        let cookie = SessionCookie { session_id, csrf: csrf.clone(), access_token: tokens.access_token };
        let Some(session_cookie) = self.session_cookie(settings, &cookie).await else {
            return crate::reply::internal_error_reply();
        };
        console_log!("{}", event_log("signed_in", json!({})));
        let mut reply = Reply::text(302, "signed in");
        reply.headers.push(("location", flow.return_to));
        reply.headers.push(("set-cookie", session_cookie));
        reply.headers.push(("set-cookie", set_cookie(CSRF_COOKIE, &csrf, "Lax", SESSION_COOKIE_SECS, true)));
        reply.headers.push(("set-cookie", clear_cookie(&name)));
        reply
    }

    /// The ID token must verify (this issuer, `aud` the edge's client, `typ` JWT) and carry the
    /// flow's nonce; the access token must pass the edge's own checks.
    async fn check_tokens(
        &self,
        settings: &SessionSettings,
        access: &str,
        id_token: &str,
        nonce: &str,
        ctx: &worker::Context,
    ) -> Result<(), String> {
        let keys = Rc::clone(&self.keys).for_request(ctx).await.ok_or("no key set")?;
        let now = now_ms() / 1000;
        let id_validator = Validator::new(
            ClaimsOptions::new(self.config.validator.claims.issuer.clone(), [settings.client_id.clone()])
                .with_token_type("JWT"),
        );
        let claims = id_validator
            .validate_async(id_token, &keys, &super::webcrypto::WebCrypto, now)
            .await
            .map_err(|error| format!("the ID token was refused: {error}"))?;
        if claims.nonce.as_deref() != Some(nonce) {
            return Err("the ID token's nonce is not the flow's".to_owned());
        }
        self.config
            .validator
            .validate_async(access, &keys, &super::webcrypto::WebCrypto, now)
            .await
            .map_err(|error| format!("the access token was refused: {error}"))?;
        Ok(())
    }

    /// The sealed session cookie's `Set-Cookie`.
    /// The sealed session cookie's `Set-Cookie`: without the access token when the token is too
    /// large for a cookie (a user with very many roles), which browsers would refuse.
    async fn session_cookie(&self, settings: &SessionSettings, cookie: &SessionCookie) -> Option<String> {
        let mut sealed = sealing::seal(&settings.cookie_keys, SESSION_COOKIE, cookie.encode().as_bytes()).await?;
        if !session::fits_in_a_cookie(SESSION_COOKIE, &sealed) {
            let tokenless = SessionCookie { access_token: String::new(), ..cookie.clone() };
            sealed = sealing::seal(&settings.cookie_keys, SESSION_COOKIE, tokenless.encode().as_bytes()).await?;
        }
        Some(set_cookie(SESSION_COOKIE, &sealed, "Lax", SESSION_COOKIE_SECS, false))
    }

    /// The request's session cookie, opened; `None` without one, or with one that does not open
    /// (another key, altered, not ours).
    pub(super) async fn open_session(
        &self,
        settings: &SessionSettings,
        head: &RequestHead<'_>,
    ) -> Option<SessionCookie> {
        let sealed = head.cookie(SESSION_COOKIE)?;
        let plain = sealing::open(&settings.cookie_keys, SESSION_COOKIE, sealed).await?;
        SessionCookie::decode(&String::from_utf8(plain).ok()?)
    }

    /// Asks the session's object for the access token to use instead of the cookie's (refreshed
    /// once for every request that asks at that moment), puts it in `cookie`, and gives the new
    /// cookie to set.
    pub(super) async fn refresh_session(
        &self,
        settings: &SessionSettings,
        cookie: &mut SessionCookie,
    ) -> Result<Option<String>, Refusal> {
        let env = self.env.as_ref().ok_or(Refusal::SessionUnavailable)?;
        let tokenless = cookie.access_token.is_empty();
        cookie.access_token = match session_call(env, &cookie.session_id, "/access", &cookie.access_token).await {
            Some((200, token)) => token,
            Some((401, _)) => return Err(Refusal::SessionEnded),
            Some(_) | None => return Err(Refusal::SessionUnavailable),
        };
        // A cookie without its token stays as it is (the token still would not fit).
        if tokenless {
            return Ok(None);
        }
        Ok(self.session_cookie(settings, cookie).await)
    }

    /// `POST /_portcullis/logout`: only from a page of this site (`Sec-Fetch-Site: same-origin`, or
    /// an `Origin` of this site) bringing the session's CSRF token (form field `csrf`). Ends the
    /// session's object (which revokes the refresh token, and with it the session's access
    /// tokens, at the issuer), clears the cookies, and ends the issuer's own session through its
    /// logout (RP-initiated), which comes back to `SESSION_AFTER_LOGOUT`.
    pub(super) async fn logout(
        &self,
        settings: &SessionSettings,
        head: &RequestHead<'_>,
        request: &web_sys::Request,
        env: &JsValue,
    ) -> Reply {
        if !head.method.eq_ignore_ascii_case("POST") {
            let mut reply = Reply::text(405, "method not allowed");
            reply.headers.push(("allow", "POST".to_owned()));
            return reply;
        }
        let forbidden = |reason: &str| {
            console_log!("{}", event_log("logout_refused", json!({ "reason": reason })));
            Reply::text(403, "forbidden")
        };
        if !session::is_same_origin_post(head) {
            return forbidden("not from a page of this site");
        }
        let Some(cookie) = self.open_session(settings, head).await else {
            return forbidden("no session");
        };
        // A logout form is a few dozen bytes: a body that says it is larger is not read.
        let length = request.headers().get("content-length").ok().flatten();
        if length.and_then(|length| length.trim().parse::<u32>().ok()).is_none_or(|length| length > 4096) {
            return forbidden("no Content-Length, or a body over 4 KiB");
        }
        let form = match request.text() {
            Ok(promise) => js_sys::futures::JsFuture::from(promise).await.ok().and_then(|text| text.as_string()),
            Err(_) => None,
        };
        let csrf =
            form.as_deref().and_then(|form| session::form_value(&form.chars().take(4096).collect::<String>(), "csrf"));
        if !csrf.is_some_and(|csrf| same_secret(&csrf, &cookie.csrf)) {
            return forbidden("no CSRF token, or another");
        }
        // The session must end (its refresh token revoked) before the browser is told it is out:
        // otherwise a copy of the cookie would go on working.
        let id_token = match session_call(env, &cookie.session_id, "/end", "").await {
            Some((200, id_token)) => (!id_token.is_empty()).then_some(id_token),
            _ => {
                console_log!(
                    "{}",
                    event_log("logout_failed", json!({ "reason": "the session object could not be ended" }))
                );
                return Reply::text(503, "the sign-out could not be completed; try again");
            }
        };
        console_log!("{}", event_log("signed_out", json!({})));
        let site = session::site_origin(head);
        let location = session::end_session_url(
            &settings.end_session_endpoint,
            &settings.client_id,
            &format!("{site}{}", settings.after_logout),
            id_token.as_deref(),
        );
        let mut reply = Reply::text(303, "signed out");
        reply.headers.push(("location", location));
        reply.headers.push(("set-cookie", clear_cookie(SESSION_COOKIE)));
        reply.headers.push(("set-cookie", clear_cookie(CSRF_COOKIE)));
        reply
    }
}
