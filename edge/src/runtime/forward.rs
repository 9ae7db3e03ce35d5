//! Forwarding an allowed request to the origin: method, path, query, cleaned headers and the body
//! as a stream; the origin's response goes back as it is.

use super::{js_headers_init, js_reason, respond, subrequest};
use crate::config::Config;
use crate::decision::Identity;
use crate::headers::{forward_headers, origin_target};
use crate::reply::{bad_gateway_reply, event_log};
use crate::request::RequestHead;
use serde_json::json;
use wasm_bindgen::JsValue;
use worker::console_error;

/// Sends the request on to `ORIGIN_URL` with `body` (if any) and gives back the origin's
/// response. When the request to the origin cannot be made (the runtime refuses it) or the origin
/// cannot be reached, a 502 and one structured log line.
pub(super) async fn to_origin(
    config: &Config,
    head: &RequestHead<'_>,
    identity: Option<&Identity>,
    body: Option<&web_sys::ReadableStream>,
) -> worker::Result<web_sys::Response> {
    let outbound = match outbound_request(config, head, identity, body) {
        Ok(outbound) => outbound,
        Err(error) => return bad_gateway(head, "origin_request_refused", error),
    };
    match subrequest(&outbound).await {
        Ok(response) => Ok(response),
        Err(error) => bad_gateway(head, "origin_unreachable", error),
    }
}

/// Logs why the origin could not answer (one line) and answers 502.
fn bad_gateway(head: &RequestHead<'_>, event: &str, error: JsValue) -> worker::Result<web_sys::Response> {
    let detail = json!({"reason": js_reason(error), "method": head.method, "path": head.url_parts().path});
    console_error!("{}", event_log(event, detail));
    respond(bad_gateway_reply())
}

/// The request to the origin: same method, path and query under `ORIGIN_URL`, cleaned headers
/// with the identity, `body` streamed, redirects not followed. A JavaScript error when the
/// runtime refuses to make it.
pub(super) fn outbound_request(
    config: &Config,
    head: &RequestHead<'_>,
    identity: Option<&Identity>,
    body: Option<&web_sys::ReadableStream>,
) -> Result<web_sys::Request, JsValue> {
    let init = web_sys::RequestInit::new();
    init.set_method(head.method);
    init.set_headers(&js_headers_init(&forward_headers(config, head, identity, body.is_some())));
    // The origin's redirects are the client's to follow.
    init.set_redirect(web_sys::RequestRedirect::Manual);
    if let Some(body) = body {
        init.set_body(body);
    }
    web_sys::Request::new_with_str_and_init(&origin_target(config, head), &init)
}
