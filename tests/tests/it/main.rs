//! Keel's end-to-end tests, in one binary: the booking API, the booking worker, the canary hook
//! and the extension as processes under the Lambda emulator, idempotency against DynamoDB (a
//! moto server through the real SDK clients), and the harness itself. Every stand-in is started
//! by the test that needs it, on a free loopback port, and stopped when its guard drops.

mod booking_api;
mod booking_routes;
mod booking_worker;
mod canary_hook;
mod extension;
mod extension_notice;
mod harness;
mod idempotency;
mod idempotency_store;
