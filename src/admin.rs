//! The admin HTTP API, bound to loopback by default.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::dnc::DncList;
use crate::gate::Gate;
use crate::policy::TenantPolicy;
use crate::proxy::Settings;

use crate::metrics::Metrics;
use crate::numbering::{self, E164};

/// JSON bodies are a few fields; bulk DNC uploads are one number per line
/// (16 MiB ≈ 1 M numbers per request).
const JSON_LIMIT: usize = 64 << 10;
const BULK_LIMIT: usize = 16 << 20;
/// The one route that takes a body past `JSON_LIMIT`.
const BULK_ROUTE: &str = "/v1/dnc/{list}";

/// What the admin API needs of the running application (`app` implements
/// it): the API never reaches into the application's wiring.
pub trait Operations: Send + Sync {
    /// The gate new calls are decided by (tenants, lists, state).
    fn gate(&self) -> Arc<Gate>;
    /// The settings new transactions get (carriers and their health).
    fn settings(&self) -> Arc<Settings>;
    /// Re-reads the configuration and lists: a summary, or why the
    /// running configuration stays.
    fn reload(&self) -> anyhow::Result<String>;
}

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    /// Set on SIGTERM: `/readyz` turns 503 so load balancers stop sending.
    pub stopping: Arc<AtomicBool>,
    pub token: Option<String>,
    pub ops: Arc<dyn Operations>,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let gate = s.ops.gate();
    // Ages grow between reloads: computed at each scrape.
    s.metrics.dnc_ages(&gate.tenants, gate.clock.now());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn reload(State(s): State<AdminState>) -> Response {
    // Reading lists can take seconds for millions of numbers: off the
    // async workers.
    let r = tokio::task::spawn_blocking(move || s.ops.reload()).await;
    match r {
        Ok(Ok(summary)) => {
            Json(serde_json::json!({ "result": "success", "summary": summary })).into_response()
        }
        Ok(Err(e)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("reload refused, the running configuration stays: {e:#}"),
        ),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "reload task failed"),
    }
}

/// An admin API error: answered as `{"error": message}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, &self.message)
    }
}

type ApiResult = Result<Response, ApiError>;

/// A JSON body, or an error naming what is wrong with it.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t)
        .map_err(|e| ApiError::new(e.status(), format!("bad request body: {}", e.body_text())))
}

fn parse_at(at: Option<&str>, gate: &Gate) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    match at {
        None => Ok(gate.clock.now()),
        Some(a) => chrono::DateTime::parse_from_rfc3339(a)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| ApiError::bad(format!("`at` must be an RFC 3339 instant ({e}): `{a}`"))),
    }
}

fn tenant<'a>(gate: &'a Gate, id: &str) -> Result<&'a Arc<TenantPolicy>, ApiError> {
    gate.tenants
        .by_id(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no tenant `{id}`")))
}

fn number(text: &str, country: numbering::Country) -> Result<E164, ApiError> {
    numbering::parse(text, country)
        .map_err(|e| ApiError::bad(format!("`{text}` is not a valid number: {e}")))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    tenant: String,
    from: Option<String>,
    to: String,
    at: Option<String>,
    mode: Option<String>,
}

/// The decision the proxy would take for this call, with the state
/// (refusals, attempts) read but nothing counted.
async fn check(
    State(s): State<AdminState>,
    b: Result<Json<CheckRequest>, JsonRejection>,
) -> ApiResult {
    let r = body(b)?;
    let gate = s.ops.gate();
    let t = tenant(&gate, &r.tenant)?;
    let now = parse_at(r.at.as_deref(), &gate)?;
    if let Some(m) = &r.mode {
        if !matches!(m.as_str(), "automated" | "manual") {
            return Err(ApiError::bad("`mode` must be `automated` or `manual`"));
        }
    }
    let facts = crate::policy::Facts {
        caller: r.from.as_deref(),
        callee: &r.to,
        mode: r.mode.as_deref(),
        ..Default::default()
    };
    Ok(Json(gate.decide(t, &facts, now).await).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RefusalRequest {
    tenant: String,
    number: String,
    at: Option<String>,
}

/// Records that the callee refused the tenant's calls (rule 6), durably
/// before answering.
async fn refusal(
    State(s): State<AdminState>,
    b: Result<Json<RefusalRequest>, JsonRejection>,
) -> ApiResult {
    let r = body(b)?;
    let gate = s.ops.gate();
    let t = tenant(&gate, &r.tenant)?.clone();
    let callee = number(&r.number, t.country)?;
    let at = parse_at(r.at.as_deref(), &gate)?;
    if at > gate.clock.now() + chrono::Duration::hours(24) {
        return Err(ApiError::bad(
            "`at` is in the future: a refusal is recorded when it happened",
        ));
    }
    let state = gate
        .state()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no call state"))?;
    // Durable before the answer: an fsynced commit, or Redis's write (its
    // own persistence, `appendonly`, makes that durable; see the README).
    state
        .record_refusal(&t.id, callee, at, t.refusal_keep())
        .await
        .map_err(|e| {
            tracing::error!("refusal not recorded: {e}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not recorded: {e}"),
            )
        })?;
    let until = t
        .applied_for(callee)
        .and_then(|a| a.cooloff(at.date_naive()))
        .map(|c| {
            crate::policy::cooloff_end(at, c.days, numbering::callee_zones(callee))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
    tracing::info!(tenant = %t.id, %callee, %at, "refusal recorded");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "tenant": &*t.id,
            "number": callee.to_string(),
            "refused_at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "no_call_before": until,
        })),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClosureRequest {
    jurisdiction: String,
    from: String,
    to: String,
    reason: String,
}

/// Closes a jurisdiction to calls (a state of emergency, a day of
/// mourning), durably before answering.
async fn closure_post(
    State(s): State<AdminState>,
    b: Result<Json<ClosureRequest>, JsonRejection>,
) -> ApiResult {
    let r = body(b)?;
    let gate = s.ops.gate();
    let id = gate
        .tenants
        .jurisdiction(r.jurisdiction.trim())
        .ok_or_else(|| {
            ApiError::bad(format!(
                "`{}` is no jurisdiction of the tenants' rule sets (`callguard rules list`)",
                r.jurisdiction
            ))
        })?;
    let instant = |field: &str, v: &str| {
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| {
                ApiError::bad(format!(
                    "`{field}` must be an RFC 3339 instant ({e}): `{v}`"
                ))
            })
    };
    let from = instant("from", &r.from)?;
    let to = instant("to", &r.to)?;
    if to <= from {
        return Err(ApiError::bad("`to` must be after `from`"));
    }
    if to <= gate.clock.now() {
        return Err(ApiError::bad(
            "`to` is in the past: the closure would never apply",
        ));
    }
    let reason = r.reason.trim();
    if reason.is_empty() || reason.len() > 200 || reason.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "`reason` must be 1 to 200 characters with no control character",
        ));
    }
    let state = gate
        .state()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no call state"))?
        .local()
        .clone();
    let (jid, reason_owned) = (id.to_string(), reason.to_owned());
    let c = tokio::task::spawn_blocking(move || state.add_closure(&jid, from, to, &reason_owned))
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "state task failed"))?
        .map_err(|e| {
            tracing::error!("closure not recorded: {e}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not recorded: {e}"),
            )
        })?;
    tracing::info!(id = c.id, jurisdiction = %c.jurisdiction, from = %c.from, to = %c.to, reason = %c.reason, "closure recorded");
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

async fn closure_list(State(s): State<AdminState>) -> ApiResult {
    let gate = s.ops.gate();
    let all = gate
        .state()
        .and_then(|st| st.closures())
        .map(|c| (*c).clone())
        .unwrap_or_default();
    Ok(Json(serde_json::json!({ "closures": all })).into_response())
}

async fn closure_delete(State(s): State<AdminState>, Path(id): Path<String>) -> ApiResult {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad(format!("`{id}` is not a closure id")))?;
    let gate = s.ops.gate();
    let state = gate
        .state()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no call state"))?
        .local()
        .clone();
    let existed = tokio::task::spawn_blocking(move || state.remove_closure(id))
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "state task failed"))?
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("not removed: {e}")))?;
    if !existed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no closure {id}"),
        ));
    }
    tracing::info!(id, "closure removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn dnc_list(gate: &Gate, name: &str) -> Result<(DncList, numbering::Country), ApiError> {
    gate.tenants
        .dnc_list(name)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no DNC list `{name}`")))
}

async fn dnc_get(
    State(s): State<AdminState>,
    Path((list, num)): Path<(String, String)>,
) -> ApiResult {
    let (l, country) = dnc_list(&s.ops.gate(), &list)?;
    let n = number(&num, country)?;
    let (listed, source) = l.lookup(n);
    Ok(Json(serde_json::json!({
        "list": list, "number": n.to_string(), "listed": listed, "source": source,
    }))
    .into_response())
}

async fn dnc_change(s: AdminState, list: String, numbers: Vec<E164>, listed: bool) -> ApiResult {
    let gate = s.ops.gate();
    let state = gate
        .state()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no call state"))?;
    let count = numbers.len();
    let first = numbers.first().copied();
    // Published to the other instances first (Redis), then committed here.
    state
        .dnc_change(&list, numbers, listed)
        .await
        .map_err(|e| {
            tracing::error!("DNC change not recorded: {e}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not recorded: {e}"),
            )
        })?;
    s.metrics.dnc_sizes(&gate.tenants);
    tracing::info!(list = %list, count, listed, "DNC list changed through the API");
    let mut body = serde_json::json!({ "list": list, "listed": listed, "count": count });
    if let (1, Some(n)) = (count, first) {
        body["number"] = n.to_string().into();
    }
    Ok(Json(body).into_response())
}

async fn dnc_put(s: State<AdminState>, p: Path<(String, String)>) -> ApiResult {
    dnc_one(s, p, true).await
}

async fn dnc_delete(s: State<AdminState>, p: Path<(String, String)>) -> ApiResult {
    dnc_one(s, p, false).await
}

async fn dnc_one(
    State(s): State<AdminState>,
    Path((list, num)): Path<(String, String)>,
    listed: bool,
) -> ApiResult {
    let (_, country) = dnc_list(&s.ops.gate(), &list)?;
    let n = number(&num, country)?;
    dnc_change(s, list, vec![n], listed).await
}

/// Bulk addition: one number per line, `#` comments. Every line must read
/// as a number, or nothing is added.
async fn dnc_bulk(
    State(s): State<AdminState>,
    Path(list): Path<String>,
    text: String,
) -> ApiResult {
    let (_, country) = dnc_list(&s.ops.gate(), &list)?;
    let mut numbers = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match numbering::parse(line, country) {
            Ok(n) => numbers.push(n),
            Err(_) => bad.push(i + 1),
        }
    }
    if !bad.is_empty() {
        let first: Vec<_> = bad.iter().take(10).collect();
        let what = if bad.len() == 1 {
            "1 line is not a valid number".to_owned()
        } else {
            format!("{} lines are not valid numbers", bad.len())
        };
        return Err(ApiError::bad(format!(
            "{what} (first: {first:?}); nothing was added"
        )));
    }
    if numbers.is_empty() {
        return Err(ApiError::bad("no number in the body"));
    }
    dnc_change(s, list, numbers, true).await
}

type ConsentListRef = (Arc<crate::dnc::ConsentList>, numbering::Country);

fn consent_list(gate: &Gate, name: &str) -> Result<ConsentListRef, ApiError> {
    gate.tenants
        .consent_list(name)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no consent list `{name}`")))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentRequest {
    /// The day the consent was given (YYYY-MM-DD).
    date: String,
    /// Where the proof is kept (a form id, a recording reference).
    proof: String,
    /// The consumer also agreed to calls outside the legal hours.
    #[serde(default)]
    hours: bool,
}

async fn consent_get(
    State(s): State<AdminState>,
    Path((list, num)): Path<(String, String)>,
) -> ApiResult {
    let (l, country) = consent_list(&s.ops.gate(), &list)?;
    let n = number(&num, country)?;
    let (consent, source) = l.lookup(n);
    Ok(Json(serde_json::json!({
        "list": list, "number": n.to_string(), "consent": consent, "source": source,
    }))
    .into_response())
}

/// Records a consent (with its date and proof) for a number, durably and
/// on every instance sharing the state; it wins over the list's file.
async fn consent_put(
    State(s): State<AdminState>,
    Path((list, num)): Path<(String, String)>,
    b: Result<Json<ConsentRequest>, JsonRejection>,
) -> ApiResult {
    let r = body(b)?;
    let gate = s.ops.gate();
    let (_, country) = consent_list(&gate, &list)?;
    let n = number(&num, country)?;
    let date = chrono::NaiveDate::parse_from_str(r.date.trim(), "%Y-%m-%d").map_err(|e| {
        ApiError::bad(format!(
            "`date` must be a day, YYYY-MM-DD ({e}): `{}`",
            r.date
        ))
    })?;
    if date > gate.clock.now().date_naive() + chrono::Days::new(1) {
        return Err(ApiError::bad(
            "`date` is in the future: a consent is recorded once it was given",
        ));
    }
    let proof = r.proof.trim();
    if proof.is_empty() || proof.len() > 500 || proof.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "`proof` must be 1 to 500 characters with no control character: where the proof of the consent is kept",
        ));
    }
    let consent = crate::dnc::Consent {
        date,
        proof: proof.to_owned(),
        hours: r.hours,
    };
    consent_change(&gate, list, n, Some(consent)).await
}

/// Withdraws a number's consent (from the file's record too), durably.
async fn consent_delete(
    State(s): State<AdminState>,
    Path((list, num)): Path<(String, String)>,
) -> ApiResult {
    let gate = s.ops.gate();
    let (_, country) = consent_list(&gate, &list)?;
    let n = number(&num, country)?;
    consent_change(&gate, list, n, None).await
}

async fn consent_change(
    gate: &Gate,
    list: String,
    n: E164,
    consent: Option<crate::dnc::Consent>,
) -> ApiResult {
    let state = gate
        .state()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no call state"))?;
    state
        .consent_change(&list, vec![n], consent.clone())
        .await
        .map_err(|e| {
            tracing::error!("consent change not recorded: {e}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not recorded: {e}"),
            )
        })?;
    tracing::info!(list = %list, number = %n, given = consent.is_some(), "consent changed through the API");
    Ok(Json(serde_json::json!({
        "list": list, "number": n.to_string(), "consent": consent,
    }))
    .into_response())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if s.stopping.load(Ordering::Acquire) {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down: new calls are refused, calls in progress finish",
        )
    } else if s.ready.load(Ordering::Acquire) {
        // Carriers out of rotation (OPTIONS unanswered): ready while one
        // is left, since calls then go to it.
        let settings = s.ops.settings();
        let mut text = String::from("ready\n");
        let mut up = 0;
        for c in &settings.carriers {
            let checked = settings.status.checked(&c.name);
            up += usize::from(checked != Some(false));
            let word = match checked {
                Some(true) => "up",
                Some(false) => "down",
                None => "not checked",
            };
            text.push_str(&format!("carrier {}: {word}\n", c.name));
        }
        if up == 0 && !settings.carriers.is_empty() {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no carrier answers its OPTIONS pings",
            );
        }
        text.into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: loading configuration and state",
        )
    }
}

/// Bearer-token check. The probes (`/healthz`, `/readyz`) stay open so an
/// orchestrator needs no secret.
async fn auth(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
        if !ok {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    next.run(req).await
}

/// Every change made through the API (a PUT, a DELETE, a POST other than
/// `/v1/check`) goes into the audit trail, on disk before it is answered: which
/// token, what was asked (the JSON body, or a bulk upload's size and
/// SHA-256), the status and the answer. Requests refused for their token
/// never get here (`auth` runs first): a stranger cannot fill the trail.
async fn record_change(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let changes = method == axum::http::Method::PUT
        || method == axum::http::Method::DELETE
        || (method == axum::http::Method::POST && path != "/v1/check");
    let gate = s.ops.gate();
    let Some(audit) = gate.audit().filter(|_| changes).cloned() else {
        return next.run(req).await;
    };
    // The route's own limit, read here because the body is read here
    // first: a JSON change is refused past 64 KiB before it is buffered
    // to the bulk upload's 16 MiB.
    let limit = match req.extensions().get::<axum::extract::MatchedPath>() {
        Some(p) if p.as_str() == BULK_ROUTE => BULK_LIMIT,
        _ => JSON_LIMIT,
    };
    // Not applied when it could not be recorded: the trail must hold
    // every change (a DNC removal or a consent no one can account for
    // later), as no call is placed unrecorded.
    if !audit.is_writable() {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit trail cannot be written (its disk refuses writes, or its queue is full): the change is not applied; try again when callguard_audit_up is 1",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        return r;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is over {limit} bytes"),
        );
    };
    let request = (!bytes.is_empty()).then(|| {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            let sha256 = crate::audit::chain::sha256_hex(&bytes);
            serde_json::json!({ "bytes": bytes.len(), "sha256": sha256 })
        })
    });
    let resp = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let answer = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let change = crate::audit::AdminChange {
        at: gate.clock.now(),
        via: crate::audit::Via::Api,
        token: s.token.as_deref().map(crate::audit::token_id),
        method: method.to_string(),
        path,
        request,
        status: status.as_u16(),
        result: serde_json::from_slice(&answer).ok(),
    };
    // On disk before the answer: an acknowledged change is never missing
    // from the trail (calls accept a 100 ms loss window; changes are rare).
    let recorded = audit.record_admin(change).is_ok()
        && tokio::task::spawn_blocking(move || audit.flush(std::time::Duration::from_secs(5)))
            .await
            .unwrap_or(false);
    if !recorded {
        tracing::error!(
            status = status.as_u16(),
            "audit trail behind: an admin change may not be recorded"
        );
    }
    Response::from_parts(parts, axum::body::Body::from(answer))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Rejections axum makes itself (a path or a body that is not UTF-8, a
/// body over the limit, a method the route does not have) come as plain
/// text or with no body: rewritten so that every error of this API is a
/// JSON `{"error": …}` with the same status.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .unwrap_or_default();
    let mut message = String::from_utf8_lossy(&text).trim().to_owned();
    if message.is_empty() {
        message = status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase();
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(allow) = parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
        {
            message = format!("{message}; this endpoint takes {allow}");
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let body = serde_json::json!({ "error": message }).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/reload", axum::routing::post(reload))
        .route("/v1/check", axum::routing::post(check))
        .route("/v1/refusals", axum::routing::post(refusal))
        .route("/v1/closures", get(closure_list).post(closure_post))
        .route("/v1/closures/{id}", axum::routing::delete(closure_delete))
        .route(
            "/v1/dnc/{list}/{number}",
            get(dnc_get).put(dnc_put).delete(dnc_delete),
        )
        .route(
            "/v1/consent/{list}/{number}",
            get(consent_get).put(consent_put).delete(consent_delete),
        )
        .route(
            BULK_ROUTE,
            axum::routing::post(dnc_bulk).layer(DefaultBodyLimit::max(BULK_LIMIT)),
        )
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .route_layer(middleware::from_fn_with_state(state.clone(), record_change))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(protected)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!(error = %e, "admin server stopped");
    }
}
