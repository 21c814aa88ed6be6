//! SHA-256 as lowercase hex: what keys too long or too revealing to store as they are become.

use std::sync::Arc;

use sha2::{Digest, Sha256};

/// A SHA-256 digest as 64 lowercase hex digits, held on the stack.
#[derive(Clone, Copy)]
pub(crate) struct HexDigest([u8; 64]);

impl HexDigest {
    /// The digest of what `hasher` was fed.
    pub(crate) fn of(hasher: Sha256) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 64];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(hasher.finalize()) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        Self(hex)
    }

    /// SHA-256 of `text`.
    pub(crate) fn of_text(text: &str) -> Self {
        Self::of(Sha256::new_with_prefix(text.as_bytes()))
    }

    pub(crate) fn as_str(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// SHA-256 of `text`, as lowercase hex.
pub(crate) fn sha256_hex(text: &str) -> Arc<str> {
    Arc::from(HexDigest::of_text(text).as_str())
}
