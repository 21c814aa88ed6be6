//! The routes of the booking API, each request answered with a JSON body: a booking, a page of
//! bookings, or a refusal `{code, message, field?}`.
//!
//! Who may do what: behind API Gateway the caller is the JWT authorizer's `sub` claim
//! (`requestContext.authorizer.jwt.claims.sub`); a caller creates bookings only for itself and
//! reads, lists and cancels only its own (403 otherwise). Without an authorizer (local runs,
//! direct invocations) the `customer_id` of the body or query is trusted.

use std::time::SystemTime;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::header::{HeaderValue, CONTENT_TYPE};
use keel_runtime::metrics::catalog::keel::HTTP_SERVER_ERROR;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::events::Events;
use crate::model::{new_booking, Booking, Invalid, NewBooking};
use crate::store::{Bookings, StoreError};

/// Bookings listed per page unless `limit` says otherwise, and at most.
const DEFAULT_PAGE: i32 = 20;
const MAX_PAGE: i32 = 100;

/// The header a `POST /bookings` must carry.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The header that asks for a dry run (see [`Api::is_dry_run`]).
pub(crate) const DRY_RUN: &str = "x-keel-dry-run";

/// What the routes need: the bookings table and where booking events go.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    pub(crate) bookings: Bookings,
    pub(crate) events: Events,
    pub(crate) service: String,
}

/// A refusal: its status, a stable code, a message, and the field at fault if one is.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: i64,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl Refusal {
    pub(crate) fn new(status: i64, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    fn forbidden() -> Self {
        Refusal::new(
            403,
            "FORBIDDEN",
            "this caller may not act on that customer's bookings",
        )
    }

    fn not_found() -> Self {
        Refusal::new(404, "NOT_FOUND", "no such booking")
    }
}

impl From<Invalid> for Refusal {
    fn from(invalid: Invalid) -> Self {
        crate::metrics::VALIDATION_FAILED.increment(1);
        Refusal::new(400, "INVALID_REQUEST", invalid.message).field(invalid.field)
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict => {
                crate::metrics::BOOKING_CONFLICT.increment(1);
                Refusal::new(409, "BOOKING_CONFLICT", error.to_string())
            }
            StoreError::IdTaken => Refusal::new(422, "IDEMPOTENCY_KEY_REUSED", error.to_string()),
            StoreError::NotFound => Refusal::not_found(),
            StoreError::BadCursor => Refusal::new(400, "INVALID_REQUEST", error.to_string()).field("cursor"),
            StoreError::Contended => Refusal::new(503, "BUSY", error.to_string()),
            StoreError::Unavailable(_) | StoreError::Malformed(_) => {
                tracing::error!(error = %error, "the bookings table failed");
                Refusal::new(
                    503,
                    "UNAVAILABLE",
                    "the bookings service is unavailable; try again",
                )
            }
        }
    }
}

type Answer = Result<(i64, Value), Refusal>;

impl Api {
    /// Answers one API Gateway HTTP API request.
    pub(crate) async fn handle(&self, request: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let method = request.request_context.http.method.as_str();
        let path = request.raw_path.as_deref().unwrap_or("/");
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let answer = match (method, segments.as_slice()) {
            ("POST", ["bookings"]) => self.create(request).await,
            ("GET", ["bookings"]) => self.list(request).await,
            ("GET", ["bookings", id]) => self.read(request, id).await,
            ("POST", ["bookings", id, "cancel"]) => self.cancel(request, id).await,
            ("GET", ["health"]) => Ok(self.health().await),
            ("GET", ["metadata"]) => Ok((200, self.metadata())),
            ("POST", ["manager"]) => crate::manager::dispatch(self, request).await,
            _ => Err(Refusal::new(
                404,
                "NOT_FOUND",
                format!("no route {method} {path}"),
            )),
        };
        match answer {
            Ok((status, body)) => respond(status, &body),
            Err(refusal) => {
                let level_error = refusal.status >= 500;
                match level_error {
                    true => {
                        tracing::error!(status = refusal.status, code = refusal.code, reason = %refusal.message, "request refused")
                    }
                    false => {
                        tracing::warn!(status = refusal.status, code = refusal.code, reason = %refusal.message, "request refused")
                    }
                }
                let mut body = json!({"code": refusal.code, "message": refusal.message});
                if let Some(field) = refusal.field {
                    body["field"] = Value::String(field);
                }
                respond(refusal.status, &body)
            }
        }
    }

    async fn create(&self, request: &ApiGatewayV2httpRequest) -> Answer {
        let body = body_text(request)?;
        let booking = new_booking(&body, SystemTime::now())?;
        if self.is_dry_run(request) {
            // Keel would store a dry run's answer under its key, and replay it to the real
            // request: a dry run takes none.
            if header(request, IDEMPOTENCY_KEY).is_some() {
                return Err(Invalid::new("Idempotency-Key", "a dry run takes no Idempotency-Key").into());
            }
            return Ok((200, json!({"dry_run": true, "valid": true})));
        }
        let key = header(request, IDEMPOTENCY_KEY).ok_or_else(|| {
            crate::metrics::VALIDATION_FAILED.increment(1);
            Refusal::new(
                400,
                "IDEMPOTENCY_KEY_REQUIRED",
                "POST /bookings needs an Idempotency-Key header",
            )
            .field("Idempotency-Key")
        })?;
        authorize(request, &booking.customer_id)?;
        let created = self.create_booking(booking, key).await?;
        Ok((201, serde_json::to_value(&created).unwrap_or_default()))
    }

    /// Stores a booking (its id follows from its customer and idempotency key, so a retry finds
    /// it) and publishes `BookingRequested`.
    pub(crate) async fn create_booking(&self, booking: NewBooking, key: &str) -> Result<Booking, Refusal> {
        let booking_id = booking_id(&booking.customer_id, key);
        let booking = booking.into_booking(booking_id, SystemTime::now());
        let stored = self.bookings.create(&booking).await?;
        if let Err(error) = self.events.booking_requested(&stored).await {
            // Stored, not announced: the retry (same key, same booking) announces it.
            tracing::error!(booking_id = %stored.booking_id, error = %error, "BookingRequested not published");
            return Err(Refusal::new(
                503,
                "UNAVAILABLE",
                "the booking could not be announced; retry with the same Idempotency-Key",
            ));
        }
        crate::metrics::BOOKING_CREATED.increment(1);
        tracing::info!(booking_id = %stored.booking_id, resource_id = %stored.resource_id, guests = stored.guests, "booking requested");
        Ok(stored)
    }

    async fn read(&self, request: &ApiGatewayV2httpRequest, id: &str) -> Answer {
        let booking = self.booking(request, id).await?;
        Ok((200, serde_json::to_value(&booking).unwrap_or_default()))
    }

    async fn cancel(&self, request: &ApiGatewayV2httpRequest, id: &str) -> Answer {
        let cancelled = self.cancelled(request, id).await?;
        Ok((200, serde_json::to_value(&cancelled).unwrap_or_default()))
    }

    /// Cancels the caller's booking `id` and returns it as it now is: a booking settled for
    /// good (cancelled before, or rejected by the worker) is left as it is. Each cancellation
    /// is counted and logged once.
    pub(crate) async fn cancelled(
        &self,
        request: &ApiGatewayV2httpRequest,
        id: &str,
    ) -> Result<Booking, Refusal> {
        let booking = self.booking(request, id).await?;
        let (now, cancelled_here) = self.bookings.cancel(&booking).await?;
        if cancelled_here {
            crate::metrics::BOOKING_CANCELLED.increment(1);
            tracing::info!(booking_id = %now.booking_id, "booking cancelled");
        }
        Ok(now)
    }

    async fn list(&self, request: &ApiGatewayV2httpRequest) -> Answer {
        let query = &request.query_string_parameters;
        let customer = match (caller(request)?, query.first("customer_id")) {
            (Some(caller), Some(asked)) if caller != asked => return Err(Refusal::forbidden()),
            (Some(caller), _) => caller.to_owned(),
            (None, Some(asked)) => asked.to_owned(),
            (None, None) => {
                return Err(
                    Refusal::new(400, "INVALID_REQUEST", "customer_id is required").field("customer_id")
                )
            }
        };
        let limit = match query.first("limit") {
            None => DEFAULT_PAGE,
            Some(limit) => limit
                .parse::<i32>()
                .ok()
                .filter(|l| (1..=MAX_PAGE).contains(l))
                .ok_or_else(|| {
                    Refusal::new(
                        400,
                        "INVALID_REQUEST",
                        format!("limit must be a whole number from 1 to {MAX_PAGE}"),
                    )
                    .field("limit")
                })?,
        };
        let page = self
            .bookings
            .list(&customer, limit, query.first("cursor"))
            .await?;
        Ok((200, json!({"bookings": page.bookings, "cursor": page.cursor})))
    }

    /// The booking `id`, if this caller may act on it.
    pub(crate) async fn booking(
        &self,
        request: &ApiGatewayV2httpRequest,
        id: &str,
    ) -> Result<Booking, Refusal> {
        if !is_booking_id(id) {
            return Err(Refusal::not_found());
        }
        let booking = self.bookings.get(id).await?;
        authorize(request, &booking.customer_id)?;
        Ok(booking)
    }

    async fn health(&self) -> (i64, Value) {
        match self.bookings.health().await {
            Ok(()) => (200, json!({"status": "ok"})),
            Err(error) => {
                tracing::error!(error = %error, "health check: the bookings table does not answer");
                (503, json!({"status": "unavailable"}))
            }
        }
    }

    fn metadata(&self) -> Value {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        json!({
            "service": self.service,
            "version": env!("CARGO_PKG_VERSION"),
            "region": var("AWS_REGION"),
            "build": var("AWS_LAMBDA_FUNCTION_VERSION"),
        })
    }

    /// A dry run validates without writing: asked with `x-keel-dry-run: true`, honoured only for
    /// an event that did not come through API Gateway (no `requestContext.apiId`, which API
    /// Gateway always sets), such as the canary hook's direct invocation. A caller on the
    /// internet cannot remove `apiId`, so cannot ask for one.
    fn is_dry_run(&self, request: &ApiGatewayV2httpRequest) -> bool {
        !through_api_gateway(request) && header(request, DRY_RUN) == Some("true")
    }
}

/// The concurrency key of an event: the `resource_id` of a `POST /bookings` (the writes that
/// contend for a resource); other requests run unguarded.
pub(crate) fn resource_of_creation(event: &serde_json::value::RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Creation {
        #[serde(rename = "rawPath")]
        raw_path: Option<String>,
        #[serde(rename = "requestContext")]
        request_context: Option<Context>,
        body: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Context {
        http: Option<Http>,
    }
    #[derive(serde::Deserialize)]
    struct Http {
        method: Option<String>,
    }
    let creation: Creation = serde_json::from_str(event.get()).ok()?;
    let method = creation.request_context?.http?.method?;
    if method != "POST" || creation.raw_path?.trim_end_matches('/') != "/bookings" {
        return None;
    }
    let body: Value = serde_json::from_str(creation.body.as_deref()?).ok()?;
    body.get("resource_id")?
        .as_str()
        .map(|id| format!("resource:{id}"))
}

/// The id of a booking created by `customer_id` with idempotency key `key`.
pub(crate) fn booking_id(customer_id: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("{customer_id}\n{key}").as_bytes());
    let hex: String = digest.iter().take(12).map(|byte| format!("{byte:02x}")).collect();
    format!("bk-{hex}")
}

/// The caller API Gateway authenticated: the JWT authorizer's `sub`. `None` for an event that
/// did not come through API Gateway (a local run, a direct invocation), whose `customer_id` is
/// trusted; refused for one that came through API Gateway without a JWT `sub`, as nothing would
/// say whose bookings it may touch.
pub(crate) fn caller(request: &ApiGatewayV2httpRequest) -> Result<Option<&str>, Refusal> {
    let sub = request
        .request_context
        .authorizer
        .as_ref()
        .and_then(|authorizer| authorizer.jwt.as_ref())
        .and_then(|jwt| jwt.claims.get("sub"))
        .map(String::as_str)
        .filter(|sub| !sub.is_empty());
    match (sub, through_api_gateway(request)) {
        (Some(sub), _) => Ok(Some(sub)),
        (None, false) => Ok(None),
        (None, true) => Err(Refusal::new(
            401,
            "UNAUTHENTICATED",
            "this API needs a JWT authorizer: no caller (`sub`) came with the request",
        )),
    }
}

/// Whether the event came through API Gateway, which always sets `requestContext.apiId`.
fn through_api_gateway(request: &ApiGatewayV2httpRequest) -> bool {
    request
        .request_context
        .apiid
        .as_deref()
        .is_some_and(|id| !id.is_empty())
}

/// Refuses a caller acting on another customer's bookings.
pub(crate) fn authorize(request: &ApiGatewayV2httpRequest, customer_id: &str) -> Result<(), Refusal> {
    match caller(request)? {
        Some(caller) if caller != customer_id => Err(Refusal::forbidden()),
        _ => Ok(()),
    }
}

/// Whether `id` has the shape of a booking id (`bk-` and 24 hex digits).
fn is_booking_id(id: &str) -> bool {
    id.strip_prefix("bk-")
        .is_some_and(|hex| hex.len() == 24 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The request's body as text, decoded when API Gateway base64-encoded it.
pub(crate) fn body_text(request: &ApiGatewayV2httpRequest) -> Result<String, Invalid> {
    use base64::Engine as _;
    let body = request
        .body
        .as_deref()
        .ok_or_else(|| Invalid::new("body", "the request has no body"))?;
    match request.is_base64_encoded {
        false => Ok(body.to_owned()),
        true => base64::engine::general_purpose::STANDARD
            .decode(body)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| Invalid::new("body", "the body is not valid base64 UTF-8")),
    }
}

fn header<'a>(request: &'a ApiGatewayV2httpRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty())
}

/// The HTTP response `status` with the JSON `body`. A 5xx is counted in Keel's `HttpServerError`
/// (canary-critical: an alarm watching the new version sees it; Lambda counts the invocation a
/// success).
fn respond(status: i64, body: &Value) -> ApiGatewayV2httpResponse {
    if status >= 500 {
        HTTP_SERVER_ERROR.increment(1);
    }
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = status;
    response
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.body = Some(Body::Text(body.to_string()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_booking_id_follows_from_its_customer_and_key() {
        assert_eq!(booking_id("c-1", "k"), booking_id("c-1", "k"));
        assert_ne!(booking_id("c-1", "k"), booking_id("c-2", "k"));
        assert_ne!(booking_id("c-1", "k"), booking_id("c-1", "k2"));
        assert_eq!(booking_id("c", "k").len(), 3 + 24);
    }

    #[test]
    fn a_5xx_answer_is_counted_as_an_http_server_error_of_this_version() {
        let (output, lines) = keel_runtime::output::Output::memory();
        let function = keel_runtime::FunctionInfo {
            name: "booking-api".into(),
            version: "12".into(),
            memory_size: 128,
        };
        let layer = keel_runtime::Keel::new("booking-api")
            .output(output)
            .metrics(|config| config.function(function))
            .metrics_layer();
        // Outside an invocation, the recorder writes each value at once.
        ::metrics::with_local_recorder(&layer.recorder(), || {
            assert_eq!(respond(200, &json!({"status": "ok"})).status_code, 200);
            assert_eq!(respond(404, &json!({"code": "NOT_FOUND"})).status_code, 404);
            assert_eq!(respond(503, &json!({"code": "UNAVAILABLE"})).status_code, 503);
        });
        let documents: Vec<Value> = lines
            .lines()
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(documents.len(), 1, "{documents:#?}");
        let document = &documents[0];
        assert_eq!(document["HttpServerError"], 1);
        assert_eq!(
            document["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["service"], ["service", "function_version"]])
        );
        assert_eq!(document["function_version"], "12");
    }
}
