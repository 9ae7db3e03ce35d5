//! Browser sign-in: `/authorize` (RFC 6749 §4.1 with PKCE, OpenID Connect), the login page and
//! its forms, sign-in links, and RP-initiated logout (`/session/end`).
//!
//! The issuer's browser session is the `__Host-portcullis-session` cookie (HttpOnly, Secure,
//! SameSite=Lax, Path=/), holding a random secret whose hash the database keeps. Forms are
//! protected by a double-submitted CSRF token (the `__Host-portcullis-csrf` cookie, SameSite
//! Strict, and a hidden field that must match it) and refuse `Sec-Fetch-Site: cross-site`.

use super::ApiError;
use super::extract::ClientAddress;
use super::pages::{self, FormTargets, LoginPage};
use crate::domain::secrets::{random_id, same_hash};
use crate::domain::signin::BrowserSession;
use crate::domain::signin::request::{self, AuthorizationRequest, AuthorizeError, Prompt};
use crate::state::{AppState, LoginError};
use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use serde::Deserialize;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The issuer's browser session cookie.
pub const SESSION_COOKIE: &str = "__Host-portcullis-session";

/// The CSRF cookie of the sign-in forms.
pub const CSRF_COOKIE: &str = "__Host-portcullis-csrf";

/// `/authorize`, `/login`, `/login/email`, `/login/email/continue`, `/session/end`.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(authorize))
        .routes(routes!(password_login))
        .routes(routes!(request_link))
        .routes(routes!(open_link))
        .routes(routes!(continue_link))
        .routes(routes!(end_session_page, end_session))
}

/// What a page says when the database does not answer (the detail goes to the log).
const UNAVAILABLE: &str = "The sign-in service cannot answer now. Try again later.";

/// A `__Host-` cookie: Secure, Path=/, no Domain; HttpOnly.
fn host_cookie(name: &'static str, value: String, same_site: SameSite, max_age: Option<Duration>) -> Cookie<'static> {
    let mut cookie = Cookie::build((name, value)).http_only(true).secure(true).path("/").same_site(same_site);
    if let Some(max_age) = max_age {
        cookie = cookie.max_age(cookie::time::Duration::seconds(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)));
    }
    cookie.build()
}

/// The browser session cookie for `session`, whose secret is `secret`, until the session's end.
fn session_cookie(state: &AppState, session: &BrowserSession, secret: String) -> Cookie<'static> {
    let lifetime = Duration::from_secs(session.expires_at.saturating_sub(state.now()));
    host_cookie(SESSION_COOKIE, secret, SameSite::Lax, Some(lifetime))
}

/// The CSRF token of this browser: its cookie's, or a new one set on `jar`.
fn csrf_token(jar: CookieJar) -> (CookieJar, String) {
    match jar.get(CSRF_COOKIE).map(|cookie| cookie.value().to_owned()).filter(|value| value.len() >= 22) {
        Some(token) => (jar, token),
        None => {
            let token = random_id();
            (jar.add(host_cookie(CSRF_COOKIE, token.clone(), SameSite::Strict, None)), token)
        }
    }
}

/// True when a form post comes from the issuer's own page: the CSRF field matches the cookie,
/// and the browser does not call it cross-site.
fn csrf_ok(jar: &CookieJar, headers: &HeaderMap, field: &str) -> bool {
    let cross_site = headers.get("sec-fetch-site").is_some_and(|value| value == "cross-site");
    !cross_site && jar.get(CSRF_COOKIE).is_some_and(|cookie| !field.is_empty() && same_hash(cookie.value(), field))
}

/// A form of the sign-in pages: its CSRF field.
trait Posted {
    fn csrf(&self) -> &str;
}

/// A sign-in form as posted: readable (otherwise an error page, not a JSON error, for a browser),
/// and from this site (see [`csrf_ok`]).
#[expect(clippy::result_large_err, reason = "the error is the answer, made once for a refused request")]
fn posted<T: Posted>(
    form: Result<Form<T>, FormRejection>,
    jar: &CookieJar,
    headers: &HeaderMap,
) -> Result<T, Response> {
    let Form(form) = form.map_err(|rejection| {
        pages::error_page(ApiError::InvalidRequest(rejection.body_text()), "This form could not be read.")
    })?;
    if !csrf_ok(jar, headers, form.csrf()) {
        let error = ApiError::Forbidden("csrf");
        let message = "This form expired or did not come from this site. Go back, reload the page and try again.";
        return Err(pages::error_page(error, message));
    }
    Ok(form)
}

/// The origin of `uri` (scheme, host, port), for the pages' `form-action`.
fn origin_of(uri: &str) -> Option<String> {
    url::Url::parse(uri).ok().map(|url| url.origin().ascii_serialization()).filter(|origin| origin != "null")
}

/// The answer to a refused authorization request: an error page while the client or redirect
/// URI is in doubt, otherwise the error sent back to the redirect URI.
fn refuse(state: &AppState, error: AuthorizeError) -> Response {
    match error {
        AuthorizeError::NoRedirect(reason) => {
            let message = format!("The sign-in request is not valid: {reason}.");
            pages::error_page(ApiError::InvalidRequest(reason.to_owned()), &message)
        }
        AuthorizeError::Redirect { redirect_uri, state: echoed, code, description } => {
            tracing::info!(code, description, "authorization request refused; sent back to the client");
            let mut answer = vec![("error", code), ("error_description", description)];
            answer.extend(echoed.as_deref().map(|state| ("state", state)));
            Redirect::to(&request::redirect_with(&redirect_uri, &answer, &state.config().issuer)).into_response()
        }
    }
}

/// The request of `query`, checked; `Err` is the answer to send instead.
async fn checked_request(state: &AppState, query: &str) -> Result<AuthorizationRequest, Response> {
    match state.authorization_request(query).await {
        Ok(Ok(request)) => Ok(request),
        Ok(Err(error)) => Err(refuse(state, error)),
        Err(error) => Err(pages::error_page(error.into(), UNAVAILABLE)),
    }
}

/// The live browser session of this browser, if any.
async fn current_session(state: &AppState, jar: &CookieJar) -> Result<Option<BrowserSession>, Response> {
    let Some(cookie) = jar.get(SESSION_COOKIE) else { return Ok(None) };
    state.browser_session(cookie.value()).await.map_err(|error| pages::error_page(error.into(), UNAVAILABLE))
}

/// The redirect with a new code for `request` and `session`, setting `cookies`.
async fn redirect_with_code(
    state: &AppState,
    request: &AuthorizationRequest,
    session: &BrowserSession,
    jar: CookieJar,
) -> Response {
    match state.authorization_redirect(request, session).await {
        Ok(location) => (jar, Redirect::to(&location)).into_response(),
        Err(error) => pages::error_page(error.into(), UNAVAILABLE),
    }
}

/// The login page for `request`, with the CSRF cookie set if the browser had none.
fn login_page(
    request: &AuthorizationRequest,
    jar: CookieJar,
    status: StatusCode,
    alert: Option<&str>,
    email: Option<&str>,
) -> Response {
    let (jar, csrf) = csrf_token(jar);
    let origin = origin_of(&request.redirect_uri);
    let view = LoginPage {
        client_id: &request.client_id,
        request: &request.query,
        csrf: &csrf,
        email: email.or(request.login_hint.as_deref()),
        alert,
        targets: FormTargets(origin.as_deref()),
    };
    (jar, pages::login(status, &view)).into_response()
}

/// `GET /authorize`: with a live session recent enough for `max_age` (and no `prompt=login`),
/// straight back to the client with a code; otherwise the login page (or `login_required` for
/// `prompt=none`).
#[utoipa::path(
    get,
    path = "/authorize",
    tag = "signin",
    params(("response_type" = String, Query, description = "`code`"), ("client_id" = String, Query), ("redirect_uri" = String, Query, description = "Registered exactly"), ("code_challenge" = String, Query, description = "PKCE, S256"), ("code_challenge_method" = String, Query, description = "`S256`"), ("state" = Option<String>, Query), ("scope" = Option<String>, Query, description = "`openid`, `email`, `offline_access`"), ("nonce" = Option<String>, Query), ("prompt" = Option<String>, Query), ("max_age" = Option<u64>, Query), ("login_hint" = Option<String>, Query)),
    responses(
        (status = 200, description = "The login page", content_type = "text/html"),
        (status = 303, description = "Back to the client: a code, or an error (RFC 6749 §4.1.2)"),
        (status = 400, description = "An unknown client or an unregistered redirect URI: an error page", content_type = "text/html"),
    )
)]
async fn authorize(State(state): State<AppState>, RawQuery(query): RawQuery, jar: CookieJar) -> Response {
    let request = match checked_request(&state, query.as_deref().unwrap_or_default()).await {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    let session = match current_session(&state, &jar).await {
        Ok(session) => session,
        Err(answer) => return answer,
    };
    let now = state.now();
    let usable =
        session.filter(|session| request.prompt != Prompt::Login && request.accepts_login_at(session.auth_time, now));
    match (usable, request.prompt) {
        (Some(session), _) => redirect_with_code(&state, &request, &session, jar).await,
        (None, Prompt::None) => refuse(
            &state,
            AuthorizeError::Redirect {
                redirect_uri: request.redirect_uri.clone(),
                state: request.state.clone(),
                code: "login_required",
                description: "the user must sign in",
            },
        ),
        (None, _) => login_page(&request, jar, StatusCode::OK, None, None),
    }
}

/// The login page's two forms: email and password, or email alone for a sign-in link.
#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    request: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

impl Posted for LoginForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// A post of one of the login page's forms: the form (see [`posted`]) and the authorization
/// request it carries, checked again (the client may have changed since the page was shown).
async fn login_post(
    state: &AppState,
    jar: &CookieJar,
    headers: &HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<(LoginForm, AuthorizationRequest), Response> {
    let form = posted(form, jar, headers)?;
    let request = checked_request(state, &form.request).await?;
    Ok((form, request))
}

/// `POST /login`: email and password. A success starts a browser session and goes back to the
/// client with a code; a failure shows the page again with an answer that does not tell whether
/// the account exists. The limits of the password grant apply.
#[utoipa::path(
    post,
    path = "/login",
    tag = "signin",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`csrf`, `request`, `email`, `password`"),
    responses(
        (status = 303, description = "Signed in: back to the client with a code"),
        (status = 401, description = "Wrong email or password: the page again", content_type = "text/html"),
        (status = 403, description = "The CSRF token is missing or wrong", content_type = "text/html"),
        (status = 429, description = "Too many failed logins, with `Retry-After`", content_type = "text/html"),
    )
)]
async fn password_login(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    jar: CookieJar,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let (form, request) = match login_post(&state, &jar, &headers, form).await {
        Ok(posted) => posted,
        Err(answer) => return answer,
    };
    let user = match state.authenticate(&form.email, &form.password, client).await {
        Ok(user) => user,
        Err(LoginError::WrongCredentials) => {
            let alert = "Wrong email or password.";
            return login_page(&request, jar, StatusCode::UNAUTHORIZED, Some(alert), Some(&form.email));
        }
        Err(error @ LoginError::RateLimited { retry_after }) => {
            let minutes = retry_after.div_ceil(60);
            let message = format!("Too many failed sign-ins. Try again in {minutes} minute(s).");
            return pages::error_page(error.into(), &message);
        }
        Err(error) => return pages::error_page(error.into(), UNAVAILABLE),
    };
    start_session_and_redirect(&state, &request, &user, jar).await
}

/// Starts a browser session for `user` (replacing this browser's) and goes back to the client.
async fn start_session_and_redirect(
    state: &AppState,
    request: &AuthorizationRequest,
    user: &crate::domain::accounts::User,
    jar: CookieJar,
) -> Response {
    let previous = jar.get(SESSION_COOKIE).map(|cookie| cookie.value().to_owned());
    match state.start_browser_session(user, previous.as_deref()).await {
        Ok((session, secret)) => {
            let jar = jar.add(session_cookie(state, &session, secret));
            redirect_with_code(state, request, &session, jar).await
        }
        Err(error) => pages::error_page(error.into(), UNAVAILABLE),
    }
}

/// `POST /login/email`: sends a sign-in link that resumes this authorization request, when the
/// address has an account; the same page either way. Limited per address and per email.
#[utoipa::path(
    post,
    path = "/login/email",
    tag = "signin",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`csrf`, `request`, `email`"),
    responses(
        (status = 200, description = "\"Check your email\", whether or not the address has an account", content_type = "text/html"),
        (status = 403, description = "The CSRF token is missing or wrong", content_type = "text/html"),
        (status = 429, description = "Too many links asked for, with `Retry-After`", content_type = "text/html"),
    )
)]
async fn request_link(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    jar: CookieJar,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let (form, request) = match login_post(&state, &jar, &headers, form).await {
        Ok(posted) => posted,
        Err(answer) => return answer,
    };
    let browser = jar.get(CSRF_COOKIE).map(|cookie| cookie.value().to_owned());
    match state.send_sign_in_link(&form.email, &request, client, browser.as_deref()).await {
        Ok(()) => pages::link_sent(),
        Err(error @ LoginError::RateLimited { .. }) => {
            pages::error_page(error.into(), "Too many sign-in links were asked for. Try again later.")
        }
        Err(error) => pages::error_page(error.into(), UNAVAILABLE),
    }
}

/// `GET /login/email?token=...`: the page a sign-in link opens. Nothing is spent until its
/// button is pressed; a link that can no longer be used says so at once.
#[utoipa::path(
    get,
    path = "/login/email",
    tag = "signin",
    params(("token" = String, Query, description = "The link's token")),
    responses(
        (status = 200, description = "A page with one button: continue", content_type = "text/html"),
        (status = 400, description = "The link is unknown, used or expired", content_type = "text/html"),
    )
)]
async fn open_link(State(state): State<AppState>, RawQuery(query): RawQuery, jar: CookieJar) -> Response {
    let params = request::parameters(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let Some((_, token)) = params.into_iter().find(|(name, _)| name == "token") else {
        return pages::error_page(ApiError::InvalidRequest("no token".to_owned()), "This sign-in link is incomplete.");
    };
    let browser = jar.get(CSRF_COOKIE).map(|cookie| cookie.value().to_owned());
    let link = match state.pending_sign_in_link(&token, browser.as_deref()).await {
        Ok(Some(link)) => link,
        Ok(None) => return link_refused(),
        Err(error) => return pages::error_page(error.into(), UNAVAILABLE),
    };
    let request = match checked_request(&state, &link.request).await {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    let (jar, csrf) = csrf_token(jar);
    let origin = origin_of(&request.redirect_uri);
    // Opened in another browser than the one that asked (a phone, or a link someone else sent):
    // the page names the account, so that nobody is signed in to an account they did not ask for.
    let account = (!link.same_browser).then_some(link.email.as_str());
    let view = pages::ContinuePage { token: &token, csrf: &csrf, client_id: &request.client_id, account };
    (jar, pages::continue_link(&view, FormTargets(origin.as_deref()))).into_response()
}

/// The page for a sign-in link that cannot be used.
fn link_refused() -> Response {
    let error = ApiError::InvalidGrant("unknown, used or expired sign-in link");
    pages::error_page(error, "This sign-in link has expired or was used already. Ask for a new one.")
}

/// The form of the page a sign-in link opens.
#[derive(Debug, Deserialize)]
struct ContinueForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

impl Posted for ContinueForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /login/email/continue`: spends the link, starts a browser session and resumes the
/// authorization request it was asked for.
#[utoipa::path(
    post,
    path = "/login/email/continue",
    tag = "signin",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`csrf`, `token`"),
    responses(
        (status = 303, description = "Signed in: back to the client with a code"),
        (status = 400, description = "The link is unknown, used or expired", content_type = "text/html"),
        (status = 403, description = "The CSRF token is missing or wrong", content_type = "text/html"),
    )
)]
async fn continue_link(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    form: Result<Form<ContinueForm>, FormRejection>,
) -> Response {
    let form = match posted(form, &jar, &headers) {
        Ok(form) => form,
        Err(answer) => return answer,
    };
    let (user, query) = match state.redeem_sign_in_link(&form.token).await {
        Ok(Some(redeemed)) => redeemed,
        Ok(None) => return link_refused(),
        Err(error) => return pages::error_page(error.into(), UNAVAILABLE),
    };
    let request = match checked_request(&state, &query).await {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    start_session_and_redirect(&state, &request, &user, jar).await
}

/// The parameters of RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0 §2).
#[derive(Debug, Default, Deserialize)]
struct LogoutParams {
    #[serde(default)]
    csrf: String,
    id_token_hint: Option<String>,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
}

impl Posted for LogoutParams {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Where a logout returns to: a URI registered for the client, with `state`. `Err`: an answer
/// that refuses the request (an unregistered URI is never redirected to).
async fn logout_target(state: &AppState, params: &LogoutParams) -> Result<Option<String>, Response> {
    let Some(uri) = params.post_logout_redirect_uri.as_deref().filter(|uri| !uri.is_empty()) else { return Ok(None) };
    let refusal = |reason: &'static str| {
        pages::error_page(
            ApiError::InvalidRequest(reason.to_owned()),
            &format!("The logout request is not valid: {reason}."),
        )
    };
    let Some(client_id) = params.client_id.as_deref() else {
        return Err(refusal("post_logout_redirect_uri needs client_id"));
    };
    let client = match state.accounts().client(client_id).await {
        Ok(client) => client,
        Err(error) => return Err(pages::error_page(error.into(), UNAVAILABLE)),
    };
    if !client.is_some_and(|client| client.post_logout_redirect_uris.iter().any(|registered| registered == uri)) {
        return Err(refusal("post_logout_redirect_uri is not registered for this client"));
    }
    let answer: Vec<(&str, &str)> = params.state.as_deref().map(|echoed| ("state", echoed)).into_iter().collect();
    let mut url = url::Url::parse(uri).map_err(|_| refusal("post_logout_redirect_uri is not a URL"))?;
    if !answer.is_empty() {
        url.query_pairs_mut().extend_pairs(answer);
    }
    Ok(Some(url.into()))
}

/// Ends this browser's session, clears its cookie and goes to `target` (or the signed-out page).
async fn sign_out(state: &AppState, jar: CookieJar, target: Option<String>) -> Response {
    match current_session(state, &jar).await {
        Ok(Some(session)) => {
            if let Err(error) = state.end_browser_session(&session).await {
                return pages::error_page(error.into(), UNAVAILABLE);
            }
        }
        Ok(None) => {}
        Err(answer) => return answer,
    }
    let jar = jar.remove(host_cookie(SESSION_COOKIE, String::new(), SameSite::Lax, None));
    match target {
        Some(location) => (jar, Redirect::to(&location)).into_response(),
        None => (jar, pages::signed_out()).into_response(),
    }
}

/// `GET /session/end` (the discovery document's `end_session_endpoint`): with an
/// `id_token_hint` this issuer signed for `client_id`, about this browser's user, the session
/// ends at once; otherwise the user confirms with a button. Returns only to a
/// `post_logout_redirect_uri` registered for the client.
#[utoipa::path(
    get,
    path = "/session/end",
    tag = "signin",
    params(("id_token_hint" = Option<String>, Query), ("client_id" = Option<String>, Query), ("post_logout_redirect_uri" = Option<String>, Query, description = "Registered exactly; needs `client_id`"), ("state" = Option<String>, Query)),
    responses(
        (status = 200, description = "A confirmation page, or signed out", content_type = "text/html"),
        (status = 303, description = "Signed out: back to the registered URI"),
        (status = 400, description = "An unregistered post_logout_redirect_uri", content_type = "text/html"),
    )
)]
async fn end_session_page(State(state): State<AppState>, RawQuery(query): RawQuery, jar: CookieJar) -> Response {
    let params = match logout_params(query.as_deref().unwrap_or_default()) {
        Ok(params) => params,
        Err(answer) => return answer,
    };
    let target = match logout_target(&state, &params).await {
        Ok(target) => target,
        Err(answer) => return answer,
    };
    let session = match current_session(&state, &jar).await {
        Ok(session) => session,
        Err(answer) => return answer,
    };
    let Some(session) = session else { return sign_out(&state, jar, target).await };
    if let (Some(hint), Some(client_id)) = (params.id_token_hint.as_deref(), params.client_id.as_deref())
        && let Ok(claims) = state.verify_id_token(hint, client_id).await
        && claims.sub.as_deref() == Some(session.user_id.as_str())
    {
        return sign_out(&state, jar, target).await;
    }
    let (jar, csrf) = csrf_token(jar);
    let mut hidden = Vec::new();
    for (name, value) in [
        ("client_id", &params.client_id),
        ("post_logout_redirect_uri", &params.post_logout_redirect_uri),
        ("state", &params.state),
    ] {
        if let Some(value) = value {
            hidden.push((name, value.as_str()));
        }
    }
    let origin = target.as_deref().and_then(origin_of);
    (jar, pages::confirm_logout(&csrf, &hidden, FormTargets(origin.as_deref()))).into_response()
}

/// `POST /session/end`: the confirmation's button.
#[utoipa::path(
    post,
    path = "/session/end",
    tag = "signin",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`csrf`, and the logout request's parameters"),
    responses(
        (status = 200, description = "Signed out", content_type = "text/html"),
        (status = 303, description = "Signed out: back to the registered URI"),
        (status = 403, description = "The CSRF token is missing or wrong", content_type = "text/html"),
    )
)]
async fn end_session(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    form: Result<Form<LogoutParams>, FormRejection>,
) -> Response {
    let params = match posted(form, &jar, &headers) {
        Ok(params) => params,
        Err(answer) => return answer,
    };
    match logout_target(&state, &params).await {
        Ok(target) => sign_out(&state, jar, target).await,
        Err(answer) => answer,
    }
}

/// The logout parameters of a query string, each at most once (a repeated one: an error page).
#[expect(clippy::result_large_err, reason = "the error is the answer, made once for a refused request")]
fn logout_params(query: &str) -> Result<LogoutParams, Response> {
    let params = request::parameters(query).map_err(|name| {
        let error = ApiError::InvalidRequest(format!("{name} is repeated"));
        pages::error_page(error, "The logout request is not valid: a parameter is repeated.")
    })?;
    let get = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    Ok(LogoutParams {
        csrf: String::new(),
        id_token_hint: get("id_token_hint"),
        client_id: get("client_id"),
        post_logout_redirect_uri: get("post_logout_redirect_uri"),
        state: get("state"),
    })
}
