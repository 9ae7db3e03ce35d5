//! The browser sign-in use cases: checking an authorization request against its client, the
//! issuer's browser session, sign-in links, the code and its exchange for tokens.

use super::{AppState, LoginError, TokenError};
use crate::domain::accounts::{AccountError, User, normalize_email};
use crate::domain::address::address_key;
use crate::domain::secrets::random_id;
use crate::domain::signin::request::{self, AuthorizationRequest, AuthorizeError};
use crate::domain::signin::{
    BrowserSession, CodeGrant, Exchange, LINKS_PER_ADDRESS, LINKS_PER_EMAIL, PendingLink, SignInError,
};
use crate::domain::tokens::{self, IdTokenRequest, MintedToken};
use jwks::{Claims, P256Verifier, Validator};
use std::net::IpAddr;

/// What a code exchange issues.
#[derive(Debug)]
pub struct CodeTokens {
    /// The access token.
    pub access: MintedToken,
    /// The first refresh token of a new family.
    pub refresh: String,
    /// The ID token, when `openid` was granted.
    pub id_token: Option<String>,
    /// The granted scopes.
    pub scope: String,
}

impl AppState {
    /// Checks the authorization request `query` (a query string) against the client it names.
    /// The outer error is the database's; the inner one the request's.
    pub async fn authorization_request(
        &self,
        query: &str,
    ) -> Result<Result<AuthorizationRequest, AuthorizeError>, AccountError> {
        let client_id = match request::client_of(query) {
            Ok((client_id, _)) => client_id,
            Err(error) => return Ok(Err(error)),
        };
        let client = self.inner.accounts.client(&client_id).await?;
        Ok(request::check(query, client.as_ref()))
    }

    /// The live browser session whose cookie holds `secret`.
    pub async fn browser_session(&self, secret: &str) -> Result<Option<BrowserSession>, SignInError> {
        self.inner.signin.session(secret, self.now()).await
    }

    /// Starts a browser session for `user`, who has just proved who they are, ending the
    /// browser's previous one (`replacing`, its cookie's value) if any. Returns the session and
    /// the new cookie's value.
    pub async fn start_browser_session(
        &self,
        user: &User,
        replacing: Option<&str>,
    ) -> Result<(BrowserSession, String), SignInError> {
        let now = self.now();
        if let Some(previous) = replacing
            && let Some(session) = self.inner.signin.session(previous, now).await?
        {
            self.inner.signin.end_session(&session.id, now).await?;
        }
        let started = self.inner.signin.start_session(&user.id, now).await?;
        tracing::info!(user = %user.id, session = %started.0.id, "browser session started");
        Ok(started)
    }

    /// Ends a browser session, and with it every client's session it started (single logout:
    /// their refresh tokens stop working and their access tokens are listed at `/revoked`).
    pub async fn end_browser_session(&self, session: &BrowserSession) -> Result<(), SignInError> {
        let now = self.now();
        // Single logout: every client's session that this sign-in started ends first, so that a
        // failure leaves the browser session alive for a retry rather than its clients' behind.
        let ended = self.inner.sessions.revoke_browser_session(&session.id, now).await?;
        self.inner.signin.end_session(&session.id, now).await?;
        tracing::info!(user = %session.user_id, session = %session.id, ended, "browser session ended");
        Ok(())
    }

    /// The redirect that answers `request` for `session`: the redirect URI with a new code, the
    /// request's `state` and `iss` (RFC 9207).
    pub async fn authorization_redirect(
        &self,
        request: &AuthorizationRequest,
        session: &BrowserSession,
    ) -> Result<String, SignInError> {
        let grant = CodeGrant {
            client_id: &request.client_id,
            redirect_uri: &request.redirect_uri,
            code_challenge: &request.code_challenge,
            scope: &request.scope,
            nonce: request.nonce.as_deref(),
            session,
        };
        let code = self.inner.signin.issue_code(&grant, self.now()).await?;
        let mut answer = vec![("code", code.as_str())];
        answer.extend(request.state.as_deref().map(|state| ("state", state)));
        Ok(request::redirect_with(&request.redirect_uri, &answer, &self.inner.config.issuer))
    }

    /// Sends a sign-in link for `request` to `email` when it is the address of an enabled
    /// account, and does nothing otherwise: the caller gives the same answer either way, and the
    /// message is sent in the background so that the time taken does not tell either. Limited
    /// per address and per email ([`LINKS_PER_EMAIL`], [`LINKS_PER_ADDRESS`] within the failure
    /// window), whether or not the account exists.
    pub async fn send_sign_in_link(
        &self,
        email: &str,
        request: &AuthorizationRequest,
        client: Option<IpAddr>,
        browser: Option<&str>,
    ) -> Result<(), LoginError> {
        let now = self.now();
        let email = normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase());
        let mut limits = vec![(format!("link:{email}"), LINKS_PER_EMAIL)];
        limits.extend(client.map(|address| (format!("link-ip:{}", address_key(address)), LINKS_PER_ADDRESS)));
        if let Err(retry_after) = self.inner.sessions.count_attempt(&limits, now).await? {
            self.inner.metrics.limit_refused("sign_in_link");
            return Err(LoginError::RateLimited { retry_after });
        }
        let Some(user) = self.inner.accounts.user_by_email(&email).await?.filter(|user| !user.disabled) else {
            tracing::info!("sign-in link asked for an address without an enabled account");
            return Ok(());
        };
        // The link is made and sent in the background: the answer takes the same time whether or
        // not the address has an account.
        let (signin, mailer) = (self.inner.signin.clone(), self.inner.mailer.clone());
        let (issuer, client, query) =
            (self.inner.config.issuer.clone(), request.client_id.clone(), request.query.clone());
        let browser = browser.map(str::to_owned);
        tokio::spawn(async move {
            let token = match signin.create_link(&user.id, &query, browser.as_deref(), now).await {
                Ok(token) => token,
                Err(error) => return tracing::error!(user = %user.id, %error, "sign-in link not made"),
            };
            let link = format!("{issuer}/login/email?token={token}");
            let body = format!(
                "Someone asked to sign in to {client} with this address.\n\nTo sign in, open this link within 10 \
                 minutes (it works once):\n\n{link}\n\nIf it was not you, ignore this message.\n"
            );
            match mailer.send(&user.email, "Your sign-in link", body).await {
                Ok(()) => tracing::info!(user = %user.id, "sign-in link sent"),
                Err(error) => tracing::error!(user = %user.id, %error, "sign-in link not sent"),
            }
        });
        Ok(())
    }

    /// The sign-in link `token` while it can be used, opened by the browser whose CSRF cookie
    /// holds `browser`; nothing is spent.
    pub async fn pending_sign_in_link(
        &self,
        token: &str,
        browser: Option<&str>,
    ) -> Result<Option<PendingLink>, SignInError> {
        self.inner.signin.pending_link(token, browser, self.now()).await
    }

    /// Spends the sign-in link `token`: its enabled user and the authorization request it
    /// resumes (a query string), or `None` when the link is unknown, spent or expired, or its
    /// user disabled.
    pub async fn redeem_sign_in_link(&self, token: &str) -> Result<Option<(User, String)>, SignInError> {
        let Some((user_id, request)) = self.inner.signin.redeem_link(token, self.now()).await? else {
            return Ok(None);
        };
        let user = self.inner.accounts.user(&user_id).await?.filter(|user| !user.disabled);
        Ok(user.map(|user| (user, request)))
    }

    /// The authorization code grant: checks the code, spends it and starts a refresh-token
    /// family in one transaction, then signs the access token and, for `openid`, the ID token
    /// with the key fetched first (so that signing cannot fail after the code is spent).
    pub async fn exchange_code(
        &self,
        client_id: &str,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: &str,
    ) -> Result<CodeTokens, SignInError> {
        let (key, now) = self.signer().await?;
        let config = &self.inner.config;
        let jti = random_id();
        let exchange = Exchange {
            code,
            client_id,
            redirect_uri,
            verifier,
            access_jti: &jti,
            access_expires_at: now.saturating_add(config.access_token_ttl.as_secs()),
        };
        let row = self.inner.signin.check_code(&self.inner.sessions, &exchange, now).await?;
        let user = self.inner.accounts.user(&row.user_id).await?.filter(|user| !user.disabled);
        let user = user.ok_or(SignInError::DisabledUser)?;
        let access_request = self.browser_token_request(&user.id, &user.roles, client_id, &row.scope);
        let ttl = self.check(&access_request)?;
        let exchanged = self.inner.signin.exchange_code(&self.inner.sessions, &exchange, row, now).await?;
        let access = tokens::sign(&key, &config.issuer, &access_request, ttl, now, jti)?;
        let granted = |name: &str| exchanged.scope.split(' ').any(|scope| scope == name);
        let id_token = if granted("openid") {
            let request = IdTokenRequest {
                subject: &user.id,
                client_id,
                nonce: exchanged.nonce.as_deref(),
                auth_time: exchanged.auth_time,
                session_id: &exchanged.session_id,
                email: granted("email").then_some(user.email.as_str()),
                access_token: &access.token,
            };
            Some(tokens::sign_id_token(&key, &config.issuer, &request, ttl, now)?)
        } else {
            None
        };
        tracing::info!(user = %user.id, client = client_id, "authorization code exchanged");
        Ok(CodeTokens { access, refresh: exchanged.refresh, id_token, scope: exchanged.scope })
    }

    /// Checks an ID token this issuer signed for `client_id` as an `id_token_hint`, against the
    /// key set it serves. An expired one is accepted (RP-Initiated Logout 1.0 §2: a client's ID
    /// token has usually expired by the time its user logs out) for as long as a browser session
    /// may last: everything but its age is checked.
    pub async fn verify_id_token(&self, token: &str, client_id: &str) -> Result<Claims, TokenError> {
        let now = self.now();
        let checked = self.inner.jwks.checked(&self.inner.keys, now).await;
        let config = &self.inner.config;
        let validator =
            Validator::new(config.id_token_claims(client_id).with_leeway(config.session_max_lifetime.as_secs()));
        Ok(validator.validate(token, &checked.snapshot.keys, &P256Verifier, now)?)
    }
}
