//! Sending sign-in links: by SMTP (`lettre`) when `smtp_url` is set; otherwise into a
//! development outbox, one file per message under the data folder, which `cargo xtask dev` reads.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use std::path::PathBuf;

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    /// `smtp_url` or `mail_from` cannot be used (checked at start).
    #[error("mail setup: {0}")]
    Setup(String),
    /// The message could not be built (an address the builder refuses).
    #[error("mail message: {0}")]
    Message(String),
    /// The SMTP server refused or did not answer.
    #[error("SMTP: {0}")]
    Smtp(String),
    /// The outbox could not be written.
    #[error("outbox: {0}")]
    Outbox(#[from] std::io::Error),
}

/// Where messages go.
#[derive(Clone)]
pub enum Mailer {
    /// An SMTP server.
    Smtp {
        /// The transport, with its connection pool.
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// The sender.
        from: Mailbox,
    },
    /// Files in a folder, for development.
    Outbox {
        /// The folder.
        folder: PathBuf,
        /// The sender.
        from: Mailbox,
    },
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The SMTP URL may hold a password: say only which kind.
        match self {
            Self::Smtp { .. } => formatter.write_str("Mailer::Smtp"),
            Self::Outbox { folder, .. } => write!(formatter, "Mailer::Outbox({})", folder.display()),
        }
    }
}

impl Mailer {
    /// SMTP at `smtp_url` (`smtp://`, `smtps://`, with `?tls=required` as lettre reads it), or
    /// the outbox `folder` without one, sending as `from`.
    pub fn new(smtp_url: Option<&str>, from: &str, folder: PathBuf) -> Result<Self, MailError> {
        let from: Mailbox = from.parse().map_err(|error| MailError::Setup(format!("mail_from: {error}")))?;
        match smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    // Not the error's text: it may repeat the URL, password included.
                    .map_err(|_| MailError::Setup("smtp_url is not an SMTP URL lettre accepts".to_owned()))?
                    .build();
                Ok(Self::Smtp { transport, from })
            }
            None => Ok(Self::Outbox { folder, from }),
        }
    }

    /// Sends a plain-text message.
    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|error| MailError::Message(format!("{error}")))?;
        match self {
            Self::Smtp { transport, from } => {
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(subject)
                    .body(body)
                    .map_err(|error| MailError::Message(error.to_string()))?;
                transport.send(message).await.map_err(|error| MailError::Smtp(error.to_string()))?;
            }
            Self::Outbox { folder, from } => {
                tokio::fs::create_dir_all(folder).await?;
                let name = format!(
                    "{:020}-{}.eml",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |since| since.as_nanos()),
                    crate::domain::secrets::random_id()
                );
                // Plain text as written (no transfer encoding), so that the link can be copied
                // from the file; written under a temporary name, then renamed: a reader never
                // sees half a message.
                let text = format!("From: {from}\nTo: {to}\nSubject: {subject}\n\n{body}");
                let partial = folder.join(format!(".{name}.partial"));
                tokio::fs::write(&partial, text).await?;
                tokio::fs::rename(&partial, folder.join(name)).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_outbox_holds_one_whole_file_per_message() {
        let folder = tempfile::tempdir().expect("tempdir");
        let mailer =
            Mailer::new(None, "Portcullis <portcullis@localhost>", folder.path().join("outbox")).expect("mailer");
        mailer.send("alice@example.com", "Sign in", "https://id.example/link?t=1".to_owned()).await.expect("sent");
        let files: Vec<_> = std::fs::read_dir(folder.path().join("outbox")).expect("outbox").collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(files[0].as_ref().expect("entry").path()).expect("file");
        assert!(text.contains("To: alice@example.com") && text.contains("https://id.example/link?t=1"), "{text}");
    }

    /// A minimal SMTP server for one message: answers each command as RFC 5321 says, and returns
    /// the message's data.
    async fn smtp_sink(listener: tokio::net::TcpListener) -> String {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
        let (stream, _) = listener.accept().await.expect("a connection");
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 sink ESMTP\r\n").await.expect("greeting");
        let mut data = String::new();
        let mut in_data = false;
        while let Some(line) = lines.next_line().await.expect("a line") {
            if in_data {
                if line == "." {
                    in_data = false;
                    write.write_all(b"250 queued\r\n").await.expect("answer");
                } else {
                    data.push_str(&line);
                    data.push('\n');
                }
                continue;
            }
            let verb = line.split(' ').next().unwrap_or_default().to_ascii_uppercase();
            let answer: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 sink\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go on\r\n"
                }
                "QUIT" => {
                    write.write_all(b"221 bye\r\n").await.expect("answer");
                    break;
                }
                _ => b"250 ok\r\n",
            };
            write.write_all(answer).await.expect("answer");
        }
        data
    }

    #[tokio::test]
    async fn smtp_delivers_the_message() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("smtp://{}", listener.local_addr().expect("address"));
        let sink = tokio::spawn(smtp_sink(listener));
        let mailer = Mailer::new(Some(&url), "Portcullis <portcullis@localhost>", PathBuf::new()).expect("mailer");
        mailer.send("alice@example.com", "Sign in", "https://id.example/link?t=1".to_owned()).await.expect("sent");
        drop(mailer); // closes the pooled connection: the sink sees QUIT or the end
        let data = sink.await.expect("the sink ran");
        assert!(data.contains("To: alice@example.com") && data.contains("Subject: Sign in"), "{data}");
        assert!(data.contains("https://id.example/link?t=1"), "{data}");
    }

    #[test]
    fn a_bad_smtp_url_is_refused_without_repeating_it() {
        let error =
            Mailer::new(Some("http://user:hunter2@mail.example"), "a@b.c", PathBuf::new()).expect_err("refused");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(Mailer::new(None, "not an address", PathBuf::new()).is_err());
    }
}
