//! `POST /manager`: the operation dispatcher older clients use,
//! `{"operation": "create|read|update|delete|list|echo|ping", "tableName": …, "payload": …}`,
//! with DynamoDB-style payloads. It acts on the bookings table only (any other `tableName`:
//! 403) and through the same rules as the API: a booking it creates is validated as
//! `POST /bookings` validates it (and needs an `Idempotency-Key` header), a caller acts on its
//! own bookings only, and a booking is never deleted — `delete` cancels it, freeing its slot.
//!
//! | operation | payload | does |
//! |---|---|---|
//! | `create` | `{"Item": {"customer_id": {"S": …}, "guests": {"N": "2"}, …}}` | `POST /bookings` |
//! | `read` | `{"Key": {"booking_id": {"S": …}}}` | `GET /bookings/{id}` |
//! | `update` | `{"Key": …, "UpdateExpression": "SET #status = :s", "ExpressionAttributeNames": …, "ExpressionAttributeValues": {":s": {"S": "CANCELLED"}}}` | only `status` to `CANCELLED` |
//! | `delete` | `{"Key": …}` | cancels |
//! | `list` | `{"ExpressionAttributeValues": {":customer_id": {"S": …}}, "Limit": 20, "ExclusiveStartKey": "<cursor>"}` | `GET /bookings` |
//! | `echo` | anything | returns the payload |
//! | `ping` | — | returns `"pong"` |

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use serde_json::{json, Map, Value};

use crate::api::{authorize, caller, Api, Refusal, IDEMPOTENCY_KEY};
use crate::model::{new_booking, Invalid, Status};

type Answer = Result<(i64, Value), Refusal>;

/// Answers one `POST /manager` request.
pub(crate) async fn dispatch(api: &Api, request: &ApiGatewayV2httpRequest) -> Answer {
    let body: Value = serde_json::from_str(&crate::api::body_text(request)?)
        .map_err(|_| Invalid::new("body", "the body must be a JSON object"))?;
    let operation = body
        .get("operation")
        .and_then(Value::as_str)
        .ok_or_else(|| Invalid::new("operation", "operation is required"))?;
    let payload = body.get("payload").cloned().unwrap_or(Value::Null);
    match operation {
        "ping" => return Ok((200, json!("pong"))),
        "echo" => return Ok((200, payload)),
        "create" | "read" | "update" | "delete" | "list" => {}
        _ => {
            return Err(Invalid::new(
                "operation",
                "operation must be create, read, update, delete, list, echo or ping",
            )
            .into())
        }
    }
    match body.get("tableName").and_then(Value::as_str) {
        Some(table) if table == api.bookings.table() => {}
        _ => {
            return Err(Refusal::new(
                403,
                "FORBIDDEN",
                "tableName must be the bookings table",
            ))
        }
    }
    match operation {
        "create" => create(api, request, &payload).await,
        "read" => {
            let booking = api.booking(request, &booking_id(&payload)?).await?;
            Ok((200, json!({"Item": booking})))
        }
        "update" => update(api, request, &payload).await,
        "delete" => cancel(api, request, &booking_id(&payload)?).await,
        _ => list(api, request, &payload).await,
    }
}

async fn create(api: &Api, request: &ApiGatewayV2httpRequest, payload: &Value) -> Answer {
    let item = payload
        .get("Item")
        .and_then(Value::as_object)
        .ok_or_else(|| Invalid::new("payload.Item", "payload.Item is required"))?;
    let plain = plain_item(item)?;
    let booking = new_booking(&Value::Object(plain).to_string(), std::time::SystemTime::now())?;
    let key = request
        .headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|value| value.to_str().ok())
        .filter(|key| !key.is_empty())
        .ok_or_else(|| {
            Refusal::new(
                400,
                "IDEMPOTENCY_KEY_REQUIRED",
                "create needs an Idempotency-Key header",
            )
        })?;
    authorize(request, &booking.customer_id)?;
    let created = api.create_booking(booking, key).await?;
    Ok((201, json!({"Item": created})))
}

async fn update(api: &Api, request: &ApiGatewayV2httpRequest, payload: &Value) -> Answer {
    let id = booking_id(payload)?;
    let expression = payload
        .get("UpdateExpression")
        .and_then(Value::as_str)
        .ok_or_else(|| Invalid::new("payload.UpdateExpression", "payload.UpdateExpression is required"))?;
    // `SET <name> = <:value>`, where the name may be an `#alias`.
    let (name, value) = expression
        .trim()
        .strip_prefix("SET ")
        .and_then(|set| set.split_once('='))
        .map(|(name, value)| (name.trim(), value.trim()))
        .ok_or_else(unsupported)?;
    let name = match name.strip_prefix('#') {
        Some(_) => payload
            .pointer(&format!("/ExpressionAttributeNames/{}", escape(name)))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Invalid::new(
                    "payload.ExpressionAttributeNames",
                    format!("{name} is not defined"),
                )
            })?,
        None => name,
    };
    let value = payload
        .pointer(&format!("/ExpressionAttributeValues/{}/S", escape(value)))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Invalid::new(
                "payload.ExpressionAttributeValues",
                format!("{value} must be a string (S)"),
            )
        })?;
    match (name, Status::parse(value)) {
        ("status", Some(Status::Cancelled)) => cancel(api, request, &id).await,
        _ => Err(unsupported()),
    }
}

fn unsupported() -> Refusal {
    Invalid::new(
        "payload.UpdateExpression",
        "only `SET status = :value` with CANCELLED is supported: to change a booking, cancel it and create another",
    )
    .into()
}

async fn cancel(api: &Api, request: &ApiGatewayV2httpRequest, id: &str) -> Answer {
    Ok((200, json!({"Attributes": api.cancelled(request, id).await?})))
}

async fn list(api: &Api, request: &ApiGatewayV2httpRequest, payload: &Value) -> Answer {
    let customer = payload
        .pointer("/ExpressionAttributeValues/:customer_id/S")
        .and_then(Value::as_str)
        .or(caller(request)?)
        .ok_or_else(|| {
            Invalid::new(
                "payload.ExpressionAttributeValues",
                ":customer_id (S) is required",
            )
        })?;
    authorize(request, customer)?;
    let limit = match payload.get("Limit") {
        None => 20,
        Some(limit) => limit
            .as_i64()
            .and_then(|l| i32::try_from(l).ok())
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| Invalid::new("payload.Limit", "Limit must be a whole number from 1 to 100"))?,
    };
    let cursor = match payload.get("ExclusiveStartKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(cursor)) => Some(cursor.as_str()),
        Some(_) => {
            return Err(Invalid::new(
                "payload.ExclusiveStartKey",
                "ExclusiveStartKey must be the LastEvaluatedKey of the page before (a string)",
            )
            .into())
        }
    };
    let page = api.bookings.list(customer, limit, cursor).await?;
    Ok((
        200,
        json!({"Items": page.bookings, "LastEvaluatedKey": page.cursor}),
    ))
}

/// The `booking_id` of a `Key` payload.
fn booking_id(payload: &Value) -> Result<String, Refusal> {
    payload
        .pointer("/Key/booking_id/S")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Invalid::new("payload.Key", "payload.Key.booking_id (S) is required").into())
}

/// A DynamoDB-style item (`{"name": {"S": "text"}}`, `{"N": "2"}`) as plain JSON.
fn plain_item(item: &Map<String, Value>) -> Result<Map<String, Value>, Refusal> {
    item.iter()
        .map(|(name, typed)| {
            let plain = match typed.as_object().map(|t| t.iter().next()) {
                Some(Some((kind, value))) if kind == "S" => value.clone(),
                Some(Some((kind, Value::String(number)))) if kind == "N" => number
                    .parse::<serde_json::Number>()
                    .map(Value::Number)
                    .map_err(|_| Invalid::new(format!("payload.Item.{name}"), "N must hold a number"))?,
                Some(Some((kind, Value::Bool(flag)))) if kind == "BOOL" => Value::Bool(*flag),
                _ => {
                    return Err(Invalid::new(
                        format!("payload.Item.{name}"),
                        "attributes must be {\"S\": …}, {\"N\": …} or {\"BOOL\": …}",
                    )
                    .into())
                }
            };
            Ok((name.clone(), plain))
        })
        .collect()
}

/// `text` as a JSON pointer token.
fn escape(text: &str) -> String {
    text.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_items_become_plain_json() {
        let item = json!({"customer_id": {"S": "c-1"}, "guests": {"N": "2"}});
        let plain = plain_item(item.as_object().unwrap()).unwrap();
        assert_eq!(Value::Object(plain), json!({"customer_id": "c-1", "guests": 2}));
        let bad = json!({"guests": {"L": []}});
        assert!(plain_item(bad.as_object().unwrap()).is_err());
    }
}
