//! `issuer users ...`: accounts, on the configured database (created and migrated if needed);
//! no KEK or signing key is involved.

use super::{now, print_json, utc};
use anyhow::Context as _;
use issuer::config::Config;
use issuer::domain::accounts::{Accounts, User};
use issuer::domain::secrets::PasswordHasher;
use issuer::domain::sessions::Sessions;
use issuer::store::{Db, OpenMode};

/// The accounts and sessions of the configured database (created and migrated if needed); no
/// KEK or signing key is involved.
pub(super) async fn open_accounts(config: &Config) -> anyhow::Result<(Db, Accounts, Sessions)> {
    let db = Db::open(&config.database_url, OpenMode::Create).await?;
    let accounts = Accounts::new(db.clone(), PasswordHasher::new(config.password_hashing).await?);
    let sessions = Sessions::new(db.clone(), config.session_policy());
    Ok((db, accounts, sessions))
}

pub(super) async fn run(command: super::UsersCommand, config: &Config) -> anyhow::Result<()> {
    let (db, accounts, sessions) = open_accounts(config).await?;
    let now = now();
    let known = async |email: &str| -> anyhow::Result<User> {
        accounts.user_by_email(email).await?.with_context(|| format!("no user {email}"))
    };
    let result = match command {
        super::UsersCommand::Add { email, roles } => {
            let password = read_password()?;
            let user = accounts.create_user(&email, &password, &roles, now).await?;
            print_json(&user)
        }
        super::UsersCommand::List { json: true } => {
            print_json(&serde_json::json!({ "users": accounts.users().await? }))
        }
        super::UsersCommand::List { json: false } => {
            println!("{:<22}  {:<32}  {:<8}  {:<20}  ROLES", "ID", "EMAIL", "STATE", "LAST LOGIN");
            for user in accounts.users().await? {
                let state = if user.disabled { "disabled" } else { "enabled" };
                let login = user.last_login_at.map_or_else(|| "-".to_owned(), utc);
                println!("{:<22}  {:<32}  {state:<8}  {login:<20}  {}", user.id, user.email, user.roles.join(","));
            }
            Ok(())
        }
        super::UsersCommand::SetRoles { email, roles } => {
            let user = known(&email).await?;
            print_json(&accounts.set_roles(&user.id, &roles).await?)
        }
        super::UsersCommand::Disable { email } => {
            let user = accounts.disable(&known(&email).await?.id, now).await?;
            let ended = sessions.revoke_user(&user.id, now).await?;
            eprintln!("issuer: {} disabled; {ended} session(s) ended", user.email);
            print_json(&user)
        }
    };
    db.close().await;
    result
}

/// The password of `users add`: from a prompt (twice) on a terminal, else the first line of stdin.
fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead as _, IsTerminal as _};
    if std::io::stdin().is_terminal() {
        let password = rpassword::prompt_password("Password: ")?;
        if rpassword::prompt_password("Again: ")? != password {
            anyhow::bail!("the passwords differ");
        }
        return Ok(password);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
