//! Integration tests of the issuer: the HTTP API through `oneshot` on a real SQLite file, the
//! rotation timeline under a manual clock, two processes on one database, restarts, and the
//! PyJWT cross-check against a real listening server, and the `issuer` command itself.

mod cli;
mod common;
mod concurrency;
mod http;
mod limits;
mod oauth;
mod operations;
mod pyjwt;
mod restart;
mod revocation;
mod rotation;
mod signin;
mod users;
