//! The dashboard's local HTTP/1.1 server (hyper): the embedded page, `/events` (server-sent
//! events), JSON reads under `/api/`, and the drain and undrain POSTs, each of which is one
//! coordinator call made with the operator's own certificate.
//!
//! Guarantees: the server answers only on loopback, only to requests whose `Host` names it (no
//! DNS rebinding), and only to the browser that opened the printed URL (a random token traded
//! for an `HttpOnly`, `SameSite=Strict` cookie) or to a client that sends the token as a bearer
//! token; a POST must be `application/json` from no other origin. Connections, open pages and
//! request bodies are bounded; a page's event stream never blocks anything but itself.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

use hav_proto::v1::{DrainRequest, SlaRequest};

use super::assets;
use super::feed::{Fleet, Hub};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Connections served at once; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 64;
/// Pages following `/events` at once.
pub const MAX_PAGES: usize = 16;
/// The largest request body read (a drain's reason).
pub const MAX_REQUEST_BODY: usize = 4096;
/// A client has this long to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A comment on every open event stream this often: a page that went away is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long the browser waits before it reconnects an event stream.
const RETRY_MS: u32 = 2000;

/// What the server needs.
pub struct App {
    hub: Arc<Hub>,
    fleet: Fleet,
    access: Access,
    pages: Arc<Semaphore>,
}

impl App {
    pub fn new(hub: Arc<Hub>, fleet: Fleet, access: Access) -> App {
        App {
            hub,
            fleet,
            access,
            pages: Arc::new(Semaphore::new(MAX_PAGES)),
        }
    }
}

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener, app: Arc<App>) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors and the like: wait a little, keep serving the rest.
                eprintln!("havctl dashboard: accept: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(secured(handle(&app, request).await)) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            // A client that goes away mid-request is its own business.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

/// Who may use the server.
pub struct Access {
    token: String,
    cookie: String,
    /// The `Host` values that name this server.
    hosts: Vec<String>,
    url: String,
}

impl Access {
    /// For a server bound to `local`, with the secret `token`.
    pub fn new(local: SocketAddr, token: String) -> Access {
        let port = local.port();
        let host = match local.ip() {
            IpAddr::V4(ip) => format!("{ip}:{port}"),
            IpAddr::V6(ip) => format!("[{ip}]:{port}"),
        };
        Access {
            url: format!("http://{host}/?token={token}"),
            cookie: format!("hav_dashboard_{port}"),
            hosts: vec![host, format!("localhost:{port}")],
            token,
        }
    }

    /// The URL to open (it carries the token).
    pub fn login_url(&self) -> &str {
        &self.url
    }

    fn host_ok(&self, headers: &HeaderMap) -> bool {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        host.is_some_and(|host| self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)))
    }

    fn token_ok(&self, given: &str) -> bool {
        constant_time_eq(given.as_bytes(), self.token.as_bytes())
    }

    /// The cookie, or `Authorization: Bearer <token>`.
    fn authorised(&self, headers: &HeaderMap) -> bool {
        let bearer = (headers.get_all(header::AUTHORIZATION).iter())
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|token| self.token_ok(token.trim()));
        let cookie = (headers.get_all(header::COOKIE).iter())
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == self.cookie && self.token_ok(value));
        bearer || cookie
    }

    /// A POST comes from our page (or a non-browser client): JSON, and no foreign `Origin`.
    fn post_ok(&self, headers: &HeaderMap) -> bool {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim() == "application/json")
            });
        let origin_ok = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            None => true,
            Some(origin) => {
                (self.hosts.iter()).any(|h| origin.eq_ignore_ascii_case(&format!("http://{h}")))
            }
        };
        json && origin_ok
    }

    fn login_cookie(&self) -> String {
        format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            self.cookie, self.token
        )
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh 128-bit token from the kernel's random source, in hex.
pub fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

async fn handle(app: &App, request: Request<Incoming>) -> Response<Body> {
    let headers = request.headers();
    if !app.access.host_ok(headers) {
        return text(
            StatusCode::MISDIRECTED_REQUEST,
            "this server answers only to the address havctl dashboard printed",
        );
    }
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let method = request.method().clone();
    let login = (method == Method::GET && path == "/")
        .then(|| query_value(&query, "token"))
        .flatten();
    if let Some(token) = login {
        if !app.access.token_ok(&token) {
            return text(
                StatusCode::FORBIDDEN,
                "wrong token: open the URL havctl dashboard printed",
            );
        }
        // Trade the token for a cookie and take it out of the address bar.
        let mut response = empty(StatusCode::SEE_OTHER);
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/"));
        if let Ok(cookie) = HeaderValue::from_str(&app.access.login_cookie()) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
        return response;
    }
    if !app.access.authorised(headers) {
        return text(
            StatusCode::UNAUTHORIZED,
            "open the URL havctl dashboard printed: it carries this server's token",
        );
    }
    match (&method, path.as_str()) {
        (&Method::GET, "/") => asset(assets::INDEX_HTML, "text/html; charset=utf-8"),
        (&Method::GET, "/app.js") => asset(assets::APP_JS, "text/javascript; charset=utf-8"),
        (&Method::GET, "/style.css") => asset(assets::STYLE_CSS, "text/css; charset=utf-8"),
        (&Method::GET, "/events") => events(app),
        (&Method::GET, "/api/status") => ok_json(&app.hub.with(|m| m.status_json())),
        (&Method::GET, "/api/timeline") => ok_json(&app.hub.with(|m| m.timeline_json())),
        (&Method::GET, "/api/rollouts") => ok_json(&app.hub.with(|m| m.rollouts_json())),
        (&Method::GET, "/api/about") => ok_json(
            &app.hub
                .with(|m| json!({ "about": m.about_json(), "link": m.link_json() })),
        ),
        (&Method::GET, "/api/sla") => {
            sla(app, query_value(&query, "month").unwrap_or_default()).await
        }
        (&Method::POST, path) => match node_action(path) {
            Some((node, action)) => {
                if !app.access.post_ok(request.headers()) {
                    return text(
                        StatusCode::FORBIDDEN,
                        "a POST must be application/json from this dashboard's own page",
                    );
                }
                match action {
                    NodeAction::Drain => drain(app, request, node, false).await,
                    NodeAction::Undrain => drain(app, request, node, true).await,
                    NodeAction::Priority => priority(app, request, node, false).await,
                    NodeAction::ClearPriority => priority(app, request, node, true).await,
                }
            }
            None => text(StatusCode::NOT_FOUND, "no such endpoint"),
        },
        (_, "/" | "/app.js" | "/style.css" | "/events") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "GET only")
        }
        (_, path) if path.starts_with("/api/") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "no such endpoint for this method",
        ),
        _ => text(StatusCode::NOT_FOUND, "no such page"),
    }
}

/// What a POST under `/api/nodes/<node>/` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeAction {
    Drain,
    Undrain,
    /// `priority`: set the node's priority intent.
    Priority,
    /// `priority/clear`: lift it.
    ClearPriority,
}

/// `/api/nodes/<node>/drain`, `/undrain`, `/priority` or `/priority/clear`.
fn node_action(path: &str) -> Option<(String, NodeAction)> {
    let rest = path.strip_prefix("/api/nodes/")?;
    let (node, action) = rest.split_once('/')?;
    let action = match action {
        "drain" => NodeAction::Drain,
        "undrain" => NodeAction::Undrain,
        "priority" => NodeAction::Priority,
        "priority/clear" => NodeAction::ClearPriority,
        _ => return None,
    };
    hav_proto::identity::valid_name(node).then(|| (node.to_owned(), action))
}

/// The body of a priority POST.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PriorityBody {
    #[serde(default)]
    priority: u32,
    #[serde(default)]
    ttl_seconds: u32,
    #[serde(default)]
    reason: String,
}

/// Sets (or, with `clear`, lifts) the node's priority intent for all its instances through the
/// coordinator, which decides by the operator's role.
async fn priority(
    app: &App,
    request: Request<Incoming>,
    node: String,
    clear: bool,
) -> Response<Body> {
    let body = match Limited::new(request.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error_json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is limited to {MAX_REQUEST_BODY} bytes"),
            );
        }
    };
    let parsed: PriorityBody = if body.iter().all(u8::is_ascii_whitespace) {
        PriorityBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(parsed) => parsed,
            Err(e) => return error_json(StatusCode::BAD_REQUEST, &format!("request body: {e}")),
        }
    };
    let reason = if parsed.reason.is_empty() {
        "havctl dashboard".to_owned()
    } else {
        parsed.reason
    };
    let mut fleet = app.fleet.clone();
    let answer = if clear {
        fleet
            .clear_priority(hav_proto::v1::ClearPriorityRequest {
                node: node.clone(),
                instance: String::new(),
                reason,
            })
            .await
    } else {
        fleet
            .set_priority(hav_proto::v1::SetPriorityRequest {
                node: node.clone(),
                instance: String::new(),
                priority: parsed.priority,
                ttl_seconds: parsed.ttl_seconds,
                reason,
            })
            .await
    };
    app.hub.request_refresh();
    let action = if clear { "priority-clear" } else { "priority" };
    match answer {
        Ok(response) => {
            let response = response.into_inner();
            let ok = response.error.is_empty();
            let error = if ok {
                String::new()
            } else {
                format!("the node refused: {}", response.error)
            };
            json_response(
                if ok {
                    StatusCode::OK
                } else {
                    StatusCode::CONFLICT
                },
                &json!({
                    "ok": ok, "node": node, "action": action, "error": error,
                    "applied": response.applied,
                }),
            )
        }
        Err(status) => refused(&node, action, &status),
    }
}

/// The body of a drain POST (all optional).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    ttl_seconds: u32,
}

async fn drain(
    app: &App,
    request: Request<Incoming>,
    node: String,
    undrain: bool,
) -> Response<Body> {
    let body = match Limited::new(request.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error_json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is limited to {MAX_REQUEST_BODY} bytes"),
            );
        }
    };
    let parsed: DrainBody = if body.iter().all(u8::is_ascii_whitespace) {
        DrainBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(parsed) => parsed,
            Err(e) => return error_json(StatusCode::BAD_REQUEST, &format!("request body: {e}")),
        }
    };
    let reason = if parsed.reason.is_empty() {
        "havctl dashboard".to_owned()
    } else {
        parsed.reason
    };
    let answer = app
        .fleet
        .clone()
        .drain(DrainRequest {
            node: node.clone(),
            undrain,
            reason,
            ttl_seconds: parsed.ttl_seconds,
            ..DrainRequest::default()
        })
        .await;
    app.hub.request_refresh();
    let action = if undrain { "undrain" } else { "drain" };
    match answer {
        Ok(response) => {
            let response = response.into_inner();
            let status = if response.ok {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            let error = if response.ok {
                String::new()
            } else {
                format!("the coordinator refused: {}", response.error)
            };
            json_response(
                status,
                &json!({
                    "ok": response.ok, "node": node, "action": action,
                    "error": error, "moved": response.moved,
                }),
            )
        }
        Err(status) => refused(&node, action, &status),
    }
}

/// The answer to an action the coordinator refused (or could not be asked).
fn refused(node: &str, action: &str, status: &tonic::Status) -> Response<Body> {
    let code = match status.code() {
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
        _ => StatusCode::BAD_GATEWAY,
    };
    json_response(
        code,
        &json!({
            "ok": false, "node": node, "action": action,
            "error": hav_proto::transport::explain_status(status), "moved": [],
        }),
    )
}

async fn sla(app: &App, month: String) -> Response<Body> {
    let well_formed = month.is_empty()
        || (month.len() == 7
            && month.bytes().enumerate().all(|(i, b)| match i {
                4 => b == b'-',
                _ => b.is_ascii_digit(),
            }));
    if !well_formed {
        return error_json(StatusCode::BAD_REQUEST, "month: expected YYYY-MM");
    }
    match app.fleet.clone().sla(SlaRequest { month }).await {
        Ok(report) => {
            let report = report.into_inner();
            ok_json(&json!({
                "month": report.month,
                "vips": report.vips.iter().map(crate::orchestrate::availability_json).collect::<Vec<_>>(),
                "groups": report.groups.iter().map(crate::orchestrate::availability_json).collect::<Vec<_>>(),
            }))
        }
        Err(status) => {
            let code = match status.code() {
                tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
                    StatusCode::BAD_REQUEST
                }
                tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_GATEWAY,
            };
            error_json(code, &hav_proto::transport::explain_status(&status))
        }
    }
}

/// One page's event stream.
struct Page {
    hub: Arc<Hub>,
    frames: broadcast::Receiver<Bytes>,
    first: Option<Bytes>,
    keep_alive: tokio::time::Interval,
    _slot: OwnedSemaphorePermit,
}

fn events(app: &App) -> Response<Body> {
    let Ok(slot) = app.pages.clone().try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many dashboard pages are open on this havctl",
        );
    };
    let (snapshot, frames) = app.hub.subscribe();
    let mut first = format!("retry: {RETRY_MS}\n").into_bytes();
    first.extend_from_slice(&snapshot);
    let page = Page {
        hub: app.hub.clone(),
        frames,
        first: Some(Bytes::from(first)),
        keep_alive: tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE),
        _slot: slot,
    };
    let stream = futures::stream::unfold(page, |mut page| async move {
        let bytes = next_frame(&mut page).await?;
        Some((Ok(Frame::data(bytes)), page))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The next bytes of a page's stream: the first frame, then each published frame, the whole
/// picture again after the page lagged, a keep-alive comment when nothing happens; `None` when
/// the hub is gone.
async fn next_frame(page: &mut Page) -> Option<Bytes> {
    if let Some(first) = page.first.take() {
        return Some(first);
    }
    let bytes = tokio::select! {
        received = page.frames.recv() => match received {
            Ok(bytes) => bytes,
            // Too slow: frames were lost, so the whole picture again.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let (snapshot, frames) = page.hub.subscribe();
                page.frames = frames;
                snapshot
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        },
        _ = page.keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
    };
    Some(bytes)
}

/// The value of `name` in a query string, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(full(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn ok_json(value: &Value) -> Response<Body> {
    json_response(StatusCode::OK, value)
}

fn error_json(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "ok": false, "error": message }))
}

/// Headers every answer carries: nothing is cached, framed, sniffed or fetched from elsewhere.
fn secured(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
             base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access::new("127.0.0.1:7480".parse().expect("literal"), "ab12".into())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("ascii"));
        }
        map
    }

    #[test]
    fn only_our_host_names_are_answered() {
        let access = access();
        assert!(access.host_ok(&headers(&[("host", "127.0.0.1:7480")])));
        assert!(access.host_ok(&headers(&[("host", "localhost:7480")])));
        assert!(!access.host_ok(&headers(&[("host", "evil.example:7480")])));
        assert!(!access.host_ok(&headers(&[])));
        assert_eq!(access.login_url(), "http://127.0.0.1:7480/?token=ab12");
    }

    #[test]
    fn the_cookie_or_the_bearer_token_authorises_and_nothing_else() {
        let access = access();
        assert!(access.authorised(&headers(&[("cookie", "x=1; hav_dashboard_7480=ab12")])));
        assert!(access.authorised(&headers(&[("authorization", "Bearer ab12")])));
        assert!(!access.authorised(&headers(&[("cookie", "hav_dashboard_7480=ab13")])));
        assert!(!access.authorised(&headers(&[("cookie", "hav_dashboard_7481=ab12")])));
        assert!(!access.authorised(&headers(&[])));
        assert!(access.login_cookie().contains("HttpOnly; SameSite=Strict"));
    }

    #[test]
    fn a_post_must_be_json_from_our_own_origin() {
        let access = access();
        let json = ("content-type", "application/json");
        assert!(access.post_ok(&headers(&[json])));
        assert!(access.post_ok(&headers(&[json, ("origin", "http://127.0.0.1:7480")])));
        assert!(!access.post_ok(&headers(&[json, ("origin", "http://evil.example")])));
        assert!(!access.post_ok(&headers(&[(
            "content-type",
            "application/x-www-form-urlencoded"
        )])));
    }

    #[test]
    fn node_paths_name_a_valid_node_and_an_action() {
        let action = |path| node_action(path);
        assert_eq!(
            action("/api/nodes/a1/drain"),
            Some(("a1".into(), NodeAction::Drain))
        );
        assert_eq!(
            action("/api/nodes/a1/undrain"),
            Some(("a1".into(), NodeAction::Undrain))
        );
        assert_eq!(
            action("/api/nodes/a1/priority"),
            Some(("a1".into(), NodeAction::Priority))
        );
        assert_eq!(
            action("/api/nodes/a1/priority/clear"),
            Some(("a1".into(), NodeAction::ClearPriority))
        );
        assert_eq!(action("/api/nodes/a1/reboot"), None);
        assert_eq!(action("/api/nodes/A..%2f/drain"), None);
        assert_eq!(action("/api/nodes//drain"), None);
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            query_value("month=2026-01&x", "month").as_deref(),
            Some("2026-01")
        );
        assert_eq!(query_value("a=%41+b", "a").as_deref(), Some("A b"));
        assert_eq!(query_value("x", "x").as_deref(), Some(""));
        assert_eq!(query_value("", "month"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    fn hub() -> Arc<Hub> {
        let model = super::super::model::FleetModel::new(json!({ "operator": "olga" }), None);
        Arc::new(Hub::new(model))
    }

    #[tokio::test]
    async fn a_page_that_lags_gets_the_whole_picture_again() {
        let hub = hub();
        let (first, frames) = hub.subscribe();
        let mut page = Page {
            hub: hub.clone(),
            frames,
            first: Some(first),
            keep_alive: tokio::time::interval_at(
                tokio::time::Instant::now() + KEEP_ALIVE,
                KEEP_ALIVE,
            ),
            _slot: Arc::new(Semaphore::new(1))
                .try_acquire_owned()
                .expect("a free slot"),
        };
        let first = next_frame(&mut page).await.expect("the first frame");
        assert!(first.starts_with(b"event: snapshot\n"));
        // Far more changes than are buffered, and the page reads none of them.
        for i in 0..(super::super::feed::FRAMES_BUFFERED * 2) {
            hub.set_link(i % 2 == 0, String::new());
        }
        let next = next_frame(&mut page).await.expect("a frame");
        assert!(next.starts_with(b"event: snapshot\n"), "{next:?}");
        hub.set_link(true, "after".into());
        let next = next_frame(&mut page).await.expect("a frame");
        assert!(next.starts_with(b"event: link\n"), "{next:?}");
    }

    /// One HTTP/1.1 exchange on a fresh connection; the answer as text.
    async fn exchange(port: u16, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        // Until the server closes, or (an event stream) the first event has come.
        loop {
            let read = stream.read(&mut chunk).await.expect("read");
            answer.extend_from_slice(&chunk[..read]);
            if read == 0 || String::from_utf8_lossy(&answer).contains("event: snapshot") {
                break;
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn the_server_trades_the_token_for_a_cookie_and_refuses_everyone_else() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let local = listener.local_addr().expect("bound");
        let port = local.port();
        let channel = tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy();
        let fleet = hav_proto::v1::fleet_service_client::FleetServiceClient::new(channel);
        let app = Arc::new(App::new(hub(), fleet, Access::new(local, "ab12".into())));
        let server = tokio::spawn(serve(listener, app));
        let get = |path: &str, extra: &str| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Connection: close\r\n\r\n"
            )
        };
        let cookie = format!("Cookie: hav_dashboard_{port}=ab12\r\n");

        assert!(
            exchange(port, &get("/api/status", ""))
                .await
                .starts_with("HTTP/1.1 401")
        );
        assert!(
            exchange(port, &get("/?token=ab13", ""))
                .await
                .starts_with("HTTP/1.1 403")
        );
        let login = exchange(port, &get("/?token=ab12", "")).await;
        assert!(login.starts_with("HTTP/1.1 303"), "{login}");
        assert!(
            login.contains(&format!(
                "set-cookie: hav_dashboard_{port}=ab12; Path=/; HttpOnly; SameSite=Strict"
            )),
            "{login}"
        );
        let page = exchange(port, &get("/", &cookie)).await;
        assert!(
            page.starts_with("HTTP/1.1 200") && page.contains("<title>hav fleet</title>"),
            "{page}"
        );
        assert!(
            page.contains("content-security-policy: default-src 'self'"),
            "{page}"
        );
        let status = exchange(port, &get("/api/status", "Authorization: Bearer ab12\r\n")).await;
        assert!(
            status.starts_with("HTTP/1.1 200") && status.contains("\"alarms\":[]"),
            "{status}"
        );
        let rebound = format!(
            "GET / HTTP/1.1\r\nHost: evil.example:{port}\r\n{cookie}Connection: close\r\n\r\n"
        );
        assert!(exchange(port, &rebound).await.starts_with("HTTP/1.1 421"));
        let form = format!(
            "POST /api/nodes/a1/drain HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{cookie}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        );
        assert!(exchange(port, &form).await.starts_with("HTTP/1.1 403"));
        let events = exchange(port, &get("/events", &cookie)).await;
        assert!(
            events.contains("content-type: text/event-stream"),
            "{events}"
        );
        assert!(
            events
                .contains("retry: 2000\nevent: snapshot\ndata: {\"about\":{\"operator\":\"olga\"}"),
            "{events}"
        );
        server.abort();
    }

    #[test]
    fn tokens_are_fresh_and_128_bits() {
        let (a, b) = (new_token().expect("urandom"), new_token().expect("urandom"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
