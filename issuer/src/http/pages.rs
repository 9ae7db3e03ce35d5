//! The server-rendered pages of browser sign-in (maud: every value is HTML-escaped by
//! construction). No script: forms post to the issuer. Each page carries its own
//! `Content-Security-Policy`: nothing loads but its inline style (by hash), forms post only to
//! the issuer (and, where a form's answer redirects to the client, to that origin), and no other
//! site may frame it.

use super::error::{ApiError, ErrorRecord};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use maud::{DOCTYPE, Markup, html};
use sha2::{Digest as _, Sha256};

/// The pages' one style sheet, inline (allowed by its hash).
const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}\
main{max-width:24rem;margin:4rem auto;padding:2rem;background:#fff;border-radius:.5rem;box-shadow:0 1px 3px #0002}\
h1{font-size:1.4rem;margin:0 0 1rem}label{display:block;margin:.75rem 0 .25rem;font-weight:600}\
input{box-sizing:border-box;width:100%;padding:.5rem;font:inherit;border:1px solid #8a93a6;border-radius:.25rem}\
button{margin-top:1rem;width:100%;padding:.6rem;font:inherit;font-weight:600;border:0;border-radius:.25rem;\
background:#1f5fbf;color:#fff;cursor:pointer}button.secondary{background:#e6e9ef;color:#1d2330}\
.alert{padding:.5rem .75rem;border-radius:.25rem;background:#fdecea;color:#8a1c12}hr{margin:1.5rem 0;border:0;\
border-top:1px solid #dde1e8}.muted{color:#5b6478;font-size:.9rem}";

/// What a page's forms may post to, besides the issuer itself: the origin of the client's
/// redirect URI when a form's answer is a redirect there (browsers apply `form-action` to the
/// redirects that follow a form's submission).
#[derive(Clone, Copy, Debug)]
pub(super) struct FormTargets<'a>(pub(super) Option<&'a str>);

fn content_security_policy(targets: FormTargets<'_>) -> HeaderValue {
    let style_hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    let extra = targets.0.map(|origin| format!(" {origin}")).unwrap_or_default();
    let policy = format!(
        "default-src 'none'; style-src 'sha256-{style_hash}'; form-action 'self'{extra}; frame-ancestors 'none'; \
         base-uri 'none'"
    );
    HeaderValue::try_from(policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'; form-action 'self'; frame-ancestors 'none'"))
}

/// A whole page with `status`.
pub(super) fn page(status: StatusCode, title: &str, targets: FormTargets<'_>, body: Markup) -> Response {
    let document = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · Portcullis" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body { main { (body) } }
        }
    };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (header::CONTENT_SECURITY_POLICY, content_security_policy(targets)),
    ];
    (status, headers, document.into_string()).into_response()
}

/// An error as a page: the status and code of the one mapping in [`super::error`], a message
/// for people, and the record for the log.
pub(super) fn error_page(error: ApiError, message: &str) -> Response {
    let (status, code) = error.status_and_code();
    let mut response = page(
        status,
        "Sign-in failed",
        FormTargets(None),
        html! {
            h1 { "Sign-in cannot continue" }
            p role="alert" class="alert" { (message) }
            p class="muted" { "Error: " (code) ". Go back to the site you came from and try again." }
        },
    );
    if let ApiError::RateLimited { retry_after } = error {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    }
    response.extensions_mut().insert(ErrorRecord { code, reason: error.to_string() });
    response
}

/// The hidden fields every sign-in form carries: the CSRF token and the authorization request.
fn hidden(csrf: &str, request: &str) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(csrf);
        input type="hidden" name="request" value=(request);
    }
}

/// What the login page shows.
#[derive(Debug)]
pub(super) struct LoginPage<'a> {
    /// The client the user signs in to.
    pub(super) client_id: &'a str,
    /// The authorization request's query string.
    pub(super) request: &'a str,
    /// The CSRF token.
    pub(super) csrf: &'a str,
    /// The email to fill in.
    pub(super) email: Option<&'a str>,
    /// An error to show, the same whether or not an account exists.
    pub(super) alert: Option<&'a str>,
    /// The origin the forms' answers redirect to.
    pub(super) targets: FormTargets<'a>,
}

/// The login page: email and password, or a sign-in link by email.
pub(super) fn login(status: StatusCode, view: &LoginPage<'_>) -> Response {
    let body = html! {
        h1 { "Sign in" }
        p class="muted" { "to continue to " strong { (view.client_id) } }
        @if let Some(alert) = view.alert { p role="alert" class="alert" { (alert) } }
        form method="post" action="/login" {
            (hidden(view.csrf, view.request))
            label for="email" { "Email" }
            input id="email" name="email" type="email" autocomplete="username" required autofocus value=[view.email];
            label for="password" { "Password" }
            input id="password" name="password" type="password" autocomplete="current-password" required;
            button type="submit" { "Sign in" }
        }
        hr;
        form method="post" action="/login/email" {
            (hidden(view.csrf, view.request))
            label for="link-email" { "Or get a sign-in link by email" }
            input id="link-email" name="email" type="email" autocomplete="email" required value=[view.email];
            button type="submit" class="secondary" { "Email me a sign-in link" }
        }
    };
    page(status, "Sign in", view.targets, body)
}

/// The answer to a sign-in link request: the same whether or not the address has an account.
pub(super) fn link_sent() -> Response {
    let body = html! {
        h1 { "Check your email" }
        p role="status" { "If an account uses that address, a sign-in link is on its way. It works once, for 10 minutes." }
        p class="muted" { "You can close this page." }
    };
    page(StatusCode::OK, "Check your email", FormTargets(None), body)
}

/// What the page a sign-in link opens shows.
#[derive(Debug)]
pub(super) struct ContinuePage<'a> {
    /// The link's token.
    pub(super) token: &'a str,
    /// The CSRF token.
    pub(super) csrf: &'a str,
    /// The client the user signs in to.
    pub(super) client_id: &'a str,
    /// The account, named when the link is opened in another browser than the one that asked.
    pub(super) account: Option<&'a str>,
}

/// The page a sign-in link opens: one button, so that a mail scanner fetching the link does not
/// spend it.
pub(super) fn continue_link(view: &ContinuePage<'_>, targets: FormTargets<'_>) -> Response {
    let body = html! {
        h1 { "Continue signing in" }
        @match view.account {
            Some(account) => p role="alert" class="alert" {
                "This link was asked for in another browser. Continue only if you asked for it: you will be signed in as "
                strong { (account) } " to " strong { (view.client_id) } "."
            },
            None => p { "to " strong { (view.client_id) } },
        }
        form method="post" action="/login/email/continue" {
            input type="hidden" name="csrf" value=(view.csrf);
            input type="hidden" name="token" value=(view.token);
            button type="submit" { "Continue" }
        }
    };
    page(StatusCode::OK, "Continue signing in", targets, body)
}

/// The logout confirmation: a form, so that a link from another site cannot sign anyone out.
pub(super) fn confirm_logout(csrf: &str, params: &[(&str, &str)], targets: FormTargets<'_>) -> Response {
    let body = html! {
        h1 { "Sign out?" }
        p { "You will be signed out of every site that uses this sign-in." }
        form method="post" action="/session/end" {
            input type="hidden" name="csrf" value=(csrf);
            @for (name, value) in params { input type="hidden" name=(name) value=(value); }
            button type="submit" { "Sign out" }
        }
    };
    page(StatusCode::OK, "Sign out", targets, body)
}

/// After a logout with nowhere to return to.
pub(super) fn signed_out() -> Response {
    let body = html! { h1 { "Signed out" } p { "You are signed out. You can close this page." } };
    page(StatusCode::OK, "Signed out", FormTargets(None), body)
}
