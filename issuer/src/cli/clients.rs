//! `issuer clients ...`: clients of the token endpoint (client credentials) and of browser
//! sign-in (the authorization code with PKCE).

use super::users::open_accounts;
use super::{now, print_json};
use issuer::config::Config;
use issuer::domain::accounts::{Client, NewClient};

pub(super) async fn run(command: super::ClientsCommand, config: &Config) -> anyhow::Result<()> {
    let (db, accounts, sessions) = open_accounts(config).await?;
    let result = match command {
        super::ClientsCommand::Add {
            client_id,
            mut audiences,
            roles,
            redirect_uris,
            post_logout_redirect_uris,
            public,
        } => {
            // An ID token's `aud` is its client's id: no client may be named like an audience,
            // so that an ID token can never pass for an access token by its audience.
            if config.audiences.contains(&client_id) || client_id == config.admin_audience {
                anyhow::bail!("{client_id:?} is a configured audience; a client id must differ from every audience");
            }
            if audiences.is_empty() && !public {
                audiences = config.audiences.iter().take(1).cloned().collect();
            }
            let allowed = |audience: &String| config.audiences.contains(audience) || *audience == config.admin_audience;
            if let Some(audience) = audiences.iter().find(|audience| !allowed(audience)) {
                anyhow::bail!("{audience:?} is not a configured audience (setting `audiences`)");
            }
            if public && (!audiences.is_empty() || !roles.is_empty()) {
                anyhow::bail!("a public client gets no service tokens: --audience and --role do not apply");
            }
            let new = NewClient { client_id, audiences, roles, redirect_uris, post_logout_redirect_uris, public };
            let (client, secret) = accounts.create_client(&new, now()).await?;
            if secret.is_some() {
                eprintln!("issuer: the client secret is shown once; keep it now");
            }
            print_json(&serde_json::json!({ "client": client, "client_secret": secret }))
        }
        super::ClientsCommand::List { json: true } => {
            print_json(&serde_json::json!({ "clients": accounts.clients().await? }))
        }
        super::ClientsCommand::List { json: false } => {
            println!("{:<24}  {:<24}  {:<16}  REDIRECT URIS", "CLIENT", "AUDIENCES", "ROLES");
            for Client { client_id, audiences, roles, redirect_uris, public, .. } in accounts.clients().await? {
                let kind = if public { " (public)" } else { "" };
                let uris = redirect_uris.join(" ");
                println!("{:<24}  {:<24}  {:<16}  {uris}", client_id + kind, audiences.join(","), roles.join(","));
            }
            Ok(())
        }
        super::ClientsCommand::Remove { client_id } => {
            accounts.remove_client(&sessions, &client_id, now()).await.map_err(Into::into)
        }
    };
    db.close().await;
    result
}
