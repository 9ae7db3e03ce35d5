//! The authorization code decision: whether a presented code may be exchanged, from its row
//! alone. Pure: the caller reads the row, spends the code with one conditional update when this
//! says yes, and revokes what the first exchange issued when it says [`CodeRefusal::Spent`].

use super::pkce;
use crate::store::from_db_time;
use crate::store::signin::CodeRow;

/// Why a code cannot be exchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeRefusal {
    /// Used before: what that exchange issued is revoked (RFC 6749 §4.1.2).
    Spent,
    /// Past its lifetime.
    Expired,
    /// Issued to another client.
    OtherClient,
    /// Not the redirect URI it was issued for (RFC 6749 §4.1.3).
    OtherRedirectUri,
    /// The PKCE verifier does not match the challenge (RFC 7636 §4.6).
    WrongVerifier,
}

impl CodeRefusal {
    /// The reason, for the log and for `invalid_grant`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Spent => "reused authorization code",
            Self::Expired => "expired authorization code",
            Self::OtherClient => "the authorization code was issued to another client",
            Self::OtherRedirectUri => "redirect_uri differs from the authorization request's",
            Self::WrongVerifier => "code_verifier does not match the code_challenge",
        }
    }
}

/// May the code of `row` be exchanged by `client_id` with `redirect_uri` and `verifier` at
/// `now`? A spent code is reported before anything else, whoever presents it: a second use is a
/// sign that the code leaked.
pub(crate) fn decide(
    row: &CodeRow,
    client_id: &str,
    redirect_uri: Option<&str>,
    verifier: &str,
    now: u64,
) -> Result<(), CodeRefusal> {
    if row.spent_at.is_some() {
        Err(CodeRefusal::Spent)
    } else if from_db_time(row.expires_at) <= now {
        Err(CodeRefusal::Expired)
    } else if row.client_id != client_id {
        Err(CodeRefusal::OtherClient)
    } else if redirect_uri != Some(row.redirect_uri.as_str()) {
        Err(CodeRefusal::OtherRedirectUri)
    } else if !pkce::verifies(verifier, &row.code_challenge) {
        Err(CodeRefusal::WrongVerifier)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn row() -> CodeRow {
        CodeRow {
            client_id: "site".to_owned(),
            redirect_uri: "https://site.example/cb".to_owned(),
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
            scope: "openid".to_owned(),
            nonce: None,
            user_id: "u".to_owned(),
            session_id: "s".to_owned(),
            auth_time: 100,
            expires_at: 160,
            spent_at: None,
            family_id: None,
            access_jti: None,
            access_expires_at: None,
        }
    }

    /// A row, the client, the redirect URI, the verifier, the time, and the decision.
    type Case<'a> = (CodeRow, &'a str, Option<&'a str>, &'a str, u64, Result<(), CodeRefusal>);

    #[test]
    fn every_case_of_the_decision() {
        let spent = CodeRow { spent_at: Some(110), ..row() };
        let uri = Some("https://site.example/cb");
        let cases: [Case<'_>; 9] = [
            (row(), "site", uri, VERIFIER, 120, Ok(())),
            (row(), "site", uri, VERIFIER, 159, Ok(())),
            (row(), "site", uri, VERIFIER, 160, Err(CodeRefusal::Expired)),
            (spent, "site", uri, VERIFIER, 120, Err(CodeRefusal::Spent)),
            (CodeRow { spent_at: Some(110), ..row() }, "other", None, "x", 999, Err(CodeRefusal::Spent)),
            (row(), "other", uri, VERIFIER, 120, Err(CodeRefusal::OtherClient)),
            (row(), "site", Some("https://site.example/cb/"), VERIFIER, 120, Err(CodeRefusal::OtherRedirectUri)),
            (row(), "site", None, VERIFIER, 120, Err(CodeRefusal::OtherRedirectUri)),
            (row(), "site", uri, &VERIFIER.replace('d', "D"), 120, Err(CodeRefusal::WrongVerifier)),
        ];
        for (row, client, uri, verifier, now, expected) in cases {
            assert_eq!(decide(&row, client, uri, verifier, now), expected, "{client} {uri:?} {now}");
        }
    }
}
