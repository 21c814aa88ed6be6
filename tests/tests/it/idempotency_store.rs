//! The idempotency store contract, run against the in-memory store and against DynamoDB
//! (a moto server, through the real SDK client): the same conditional-write semantics, both
//! unit boundaries (milliseconds for in-progress records, seconds for completed ones), and the
//! round trips each operation costs.

use std::sync::Arc;

use keel_runtime::idempotency::{
    Acquire, DynamoDbStore, IdempotencyStore, MemoryStore, Now, Record, Status, StoreError, TABLE,
};
use keel_tests::Moto;

const T0: u64 = 1_800_000_000_000; // a fixed "now", epoch ms

fn in_progress(id: &str, owner: &str, deadline_ms: u64) -> Record {
    Record {
        id: id.into(),
        status: Status::InProgress,
        expiration: T0 / 1000 + 3600,
        in_progress_expiration: deadline_ms,
        owner: owner.into(),
        validation: "v1".into(),
        data: None,
    }
}

async fn conformance(store: &dyn IdempotencyStore, round_trips: &dyn Fn() -> u64) {
    let now = Now::from_millis(T0);

    // A free key is acquired; a duplicate gets the live record back in the same round trip.
    let first = in_progress("fn#a", "req-1", T0 + 5_000);
    let before = round_trips();
    assert_eq!(store.acquire(&first, now).await.unwrap(), Acquire::Acquired);
    assert_eq!(round_trips() - before, 1);
    let before = round_trips();
    let duplicate = in_progress("fn#a", "req-2", T0 + 6_000);
    assert_eq!(
        store.acquire(&duplicate, now).await.unwrap(),
        Acquire::Exists(first.clone())
    );
    assert_eq!(
        round_trips() - before,
        1,
        "a duplicate costs one round trip, no extra read"
    );

    // In-progress records count until their deadline, in milliseconds.
    let deadline = T0 + 5_000;
    for (at, expected_free) in [(deadline - 1, false), (deadline, false), (deadline + 1, true)] {
        let probe = in_progress("fn#a", "req-3", at + 10_000);
        let result = store.acquire(&probe, Now::from_millis(at)).await.unwrap();
        assert_eq!(
            result == Acquire::Acquired,
            expected_free,
            "in progress, probe at deadline{:+}",
            at as i64 - deadline as i64
        );
    }
    // req-3 took the key over at deadline + 1 ms: the old owner may neither complete nor release it.
    assert_eq!(
        store
            .complete("fn#a", "req-1", Some("{}".into()), T0 / 1000 + 60)
            .await,
        Err(StoreError::NotOwner)
    );
    assert_eq!(store.release("fn#a", "req-1").await, Err(StoreError::NotOwner));
    assert_eq!(store.get("fn#a").await.unwrap().unwrap().owner.as_ref(), "req-3");

    // Completed records count until `expiration`, in seconds, whatever their old deadline.
    let expiration = T0 / 1000 + 60;
    store
        .complete("fn#a", "req-3", Some(r#"{"ok":true}"#.into()), expiration)
        .await
        .unwrap();
    let completed = store.get("fn#a").await.unwrap().unwrap();
    assert_eq!(completed.status, Status::Completed);
    assert_eq!(completed.data.as_deref(), Some(r#"{"ok":true}"#));
    assert_eq!(completed.expiration, expiration);
    for (at_s, expected_free) in [
        (expiration - 1, false),
        (expiration, false),
        (expiration + 1, true),
    ] {
        let probe = in_progress("fn#a", "req-4", at_s * 1000 + 10_000);
        let result = store
            .acquire(&probe, Now::from_millis(at_s * 1000))
            .await
            .unwrap();
        match result {
            Acquire::Exists(found) => {
                assert!(
                    !expected_free,
                    "completed, probe at expiration{:+}s",
                    at_s as i64 - expiration as i64
                );
                assert_eq!(found, completed);
            }
            Acquire::Acquired => assert!(
                expected_free,
                "completed, probe at expiration{:+}s",
                at_s as i64 - expiration as i64
            ),
        }
    }

    // Release only by the owner; completion without data (a response too large to keep).
    let other = in_progress("fn#b", "req-5", T0 + 5_000);
    store.acquire(&other, now).await.unwrap();
    assert_eq!(store.release("fn#b", "req-6").await, Err(StoreError::NotOwner));
    assert!(store.get("fn#b").await.unwrap().is_some());
    store.release("fn#b", "req-5").await.unwrap();
    assert_eq!(store.get("fn#b").await.unwrap(), None);
    store.acquire(&other, now).await.unwrap();
    store
        .complete("fn#b", "req-5", None, T0 / 1000 + 60)
        .await
        .unwrap();
    let without_data = store.get("fn#b").await.unwrap().unwrap();
    assert_eq!(
        (without_data.status, without_data.data),
        (Status::Completed, None)
    );

    // Operations on a key nobody holds.
    assert_eq!(store.get("fn#none").await.unwrap(), None);
    assert_eq!(
        store.complete("fn#none", "req-7", None, 1).await,
        Err(StoreError::NotOwner)
    );
    assert_eq!(store.release("fn#none", "req-7").await, Err(StoreError::NotOwner));
}

#[tokio::test]
async fn the_memory_store_honours_the_contract() {
    let store = Arc::new(MemoryStore::new());
    let counter = store.clone();
    conformance(store.as_ref(), &move || counter.round_trips()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_store_honours_the_contract_against_moto() {
    let moto = Moto::start().expect("moto starts");
    let table = moto
        .create_table("idempotency", Some(TABLE.ttl_attribute))
        .await
        .unwrap();
    let (client, requests) = moto.dynamodb_counted();
    let store = DynamoDbStore::new(client, table);
    conformance(&store, &move || requests.get()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_failures_are_typed_store_errors() {
    let moto = Moto::start().expect("moto starts");
    let missing_table = DynamoDbStore::new(moto.dynamodb(), "no-such-table");
    let record = in_progress("fn#x", "req-1", T0 + 1_000);
    match missing_table.acquire(&record, Now::from_millis(T0)).await {
        Err(StoreError::Rejected(message)) => {
            assert!(message.contains("ResourceNotFoundException"), "{message}")
        }
        other => panic!("expected a rejected request, got {other:?}"),
    }

    // Nothing listens on port 9 of the loopback interface.
    let mut unreachable = moto.sdk_config().into_builder();
    unreachable.set_endpoint_url(Some("http://127.0.0.1:9".into()));
    let store = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&unreachable.build()), "t");
    match store.acquire(&record, Now::from_millis(T0)).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected an unavailable store, got {other:?}"),
    }

    // A record of the wrong shape is reported, not trusted.
    let table = moto.create_table("idempotency", None).await.unwrap();
    moto.dynamodb()
        .put_item()
        .table_name(&table)
        .item("id", aws_sdk_dynamodb::types::AttributeValue::S("fn#x".into()))
        .item(
            "status",
            aws_sdk_dynamodb::types::AttributeValue::S("DONE".into()),
        )
        .send()
        .await
        .unwrap();
    let store = DynamoDbStore::new(moto.dynamodb(), table);
    assert!(matches!(store.get("fn#x").await, Err(StoreError::Malformed(_))));
}
