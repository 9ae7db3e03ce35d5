//! `issuer clients ...`: service clients (client credentials).

use super::users::open_accounts;
use super::{now, print_json};
use issuer::config::Config;
use issuer::domain::accounts::Client;

pub(super) async fn run(command: super::ClientsCommand, config: &Config) -> anyhow::Result<()> {
    let (db, accounts, _) = open_accounts(config).await?;
    let result = match command {
        super::ClientsCommand::Add { client_id, mut audiences, roles } => {
            if audiences.is_empty() {
                audiences = config.audiences.iter().take(1).cloned().collect();
            }
            let allowed = |audience: &String| config.audiences.contains(audience) || *audience == config.admin_audience;
            if let Some(audience) = audiences.iter().find(|audience| !allowed(audience)) {
                anyhow::bail!("{audience:?} is not a configured audience (setting `audiences`)");
            }
            let (client, secret) = accounts.create_client(&client_id, &audiences, &roles, now()).await?;
            eprintln!("issuer: the client secret is shown once; keep it now");
            print_json(&serde_json::json!({ "client": client, "client_secret": secret }))
        }
        super::ClientsCommand::List { json: true } => {
            print_json(&serde_json::json!({ "clients": accounts.clients().await? }))
        }
        super::ClientsCommand::List { json: false } => {
            println!("{:<32}  {:<32}  ROLES", "CLIENT", "AUDIENCES");
            for Client { client_id, audiences, roles, .. } in accounts.clients().await? {
                println!("{client_id:<32}  {:<32}  {}", audiences.join(","), roles.join(","));
            }
            Ok(())
        }
        super::ClientsCommand::Remove { client_id } => {
            accounts.remove_client(&client_id, now()).await.map_err(Into::into)
        }
    };
    db.close().await;
    result
}
