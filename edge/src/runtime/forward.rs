//! Forwarding an allowed request to the origin: method, path, query, cleaned headers and the body
//! as a stream; the origin's response goes back as it is.

use super::{header_names, js_reason, outbound_request_js, respond, subrequest};
use crate::config::Config;
use crate::decision::Identity;
use crate::headers::{forward_edits, origin_target};
use crate::reply::{bad_gateway_reply, event_log};
use crate::request::RequestHead;
use serde_json::json;
use wasm_bindgen::JsValue;
use worker::console_error;

/// Sends `incoming` on to `ORIGIN_URL` (with its body when `with_body`, and the edge's
/// `assertion` when there is one) and gives back the
/// origin's response. When the request to the origin cannot be made (the runtime refuses it) or the origin
/// cannot be reached, a 502 and one structured log line.
pub(super) async fn to_origin(
    config: &Config,
    head: &RequestHead<'_>,
    identity: Option<&Identity>,
    assertion: Option<&str>,
    incoming: &web_sys::Request,
    with_body: bool,
) -> worker::Result<web_sys::Response> {
    let outbound = match outbound_request(config, head, identity, assertion, incoming, with_body) {
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

/// The request to the origin: a copy of `incoming` (same method, path and query under
/// `ORIGIN_URL`, its body streamed when `with_body`, redirects not followed) with the headers
/// edited by [`forward_edits`]. A JavaScript error when the runtime refuses to make it.
pub(super) fn outbound_request(
    config: &Config,
    head: &RequestHead<'_>,
    identity: Option<&Identity>,
    assertion: Option<&str>,
    incoming: &web_sys::Request,
    with_body: bool,
) -> Result<web_sys::Request, JsValue> {
    let names = header_names(incoming);
    let names: Vec<&str> = names.split('\n').filter(|name| !name.is_empty()).collect();
    let edits = forward_edits(config, head, &names, identity, assertion, with_body);
    outbound_request_js(incoming, with_body, identity.is_some(), &edits.plan(&origin_target(config, head)))
}
