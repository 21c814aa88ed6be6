//! SHA-256 as lowercase hex: what keys too long or too revealing to store as they are become.

use std::sync::Arc;

use sha2::{Digest, Sha256};

/// SHA-256 of `text`, as lowercase hex.
pub(crate) fn sha256_hex(text: &str) -> Arc<str> {
    hex_digest(Sha256::new_with_prefix(text.as_bytes()))
}

/// The digest of what `hasher` was fed, as lowercase hex.
pub(crate) fn hex_digest(hasher: Sha256) -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = hasher.finalize();
    let mut hex = [0u8; 64];
    for (pair, byte) in hex.chunks_exact_mut(2).zip(digest) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    // Hex digits are ASCII.
    Arc::from(std::str::from_utf8(&hex).unwrap_or_default())
}
