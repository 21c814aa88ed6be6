//! A JSON text read 16 bytes at a time: where each block holds quotes, backslashes, control
//! characters and brackets, as bit masks (bit `i` for the block's byte `i`), from which the
//! [`reader`](super::reader) finds a string's end, a container's end or the next escape without
//! looking at the bytes one by one. On x86-64 a block is classified with SSE2 (part of its
//! baseline), elsewhere eight bytes at a time in a machine word. Blocks are small because most
//! strings an event holds are: a short one is done in one block.

/// The bytes of a block.
pub(super) const BLOCK: usize = 16;

/// A block's bytes of one class: bit `i` for byte `i`.
pub(super) type Mask = u16;

/// Where a block's bytes of each class are (bit `i` for byte `i`). Past the end of the text a
/// block reads as spaces: in no class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Classes {
    /// `"`.
    pub(super) quote: Mask,
    /// `\`.
    pub(super) backslash: Mask,
    /// Bytes below `0x20`, which a string literal may not hold as they are.
    pub(super) control: Mask,
    /// `{` and `[`.
    pub(super) open: Mask,
    /// `}` and `]`.
    pub(super) close: Mask,
}

impl Classes {
    /// The bytes that end the plain run of a string literal's contents: its closing quote, a
    /// backslash, a control character.
    #[inline(always)]
    pub(super) fn ends_plain_run(&self) -> Mask {
        self.quote | self.backslash | self.control
    }

    /// The quotes no backslash escapes (see [`escaped`] for `carry`).
    #[inline(always)]
    pub(super) fn unescaped_quotes(&self, carry: &mut bool) -> Mask {
        self.quote & !escaped(self.backslash, carry)
    }

    /// The bytes of `bytes[at..]` (at most [`BLOCK`]), classified.
    #[inline(always)]
    pub(super) fn at(bytes: &[u8], at: usize) -> Self {
        match bytes.get(at..at + BLOCK).and_then(|block| block.try_into().ok()) {
            Some(block) => classify(block),
            None => {
                let mut padded = [b' '; BLOCK];
                let rest = bytes.get(at..).unwrap_or_default();
                padded[..rest.len()].copy_from_slice(rest);
                classify(&padded)
            }
        }
    }
}

/// Which bytes of a block an escape covers: the byte after each backslash that is not itself
/// escaped. `carry` says whether the previous block's last byte was such a backslash (its
/// escaped byte is this block's first), and is set for the next block.
///
/// Without a branch per backslash: in a run of backslashes, every other one escapes the next
/// byte, starting with the run's first (unless the carry escapes it). Subtracting each run's
/// first bit from the run shifted by one, with the odd bits set, leaves a code whose odd or
/// even bits say, per run, which of its bytes are escaped (the approach of simdjson's escape
/// scanner).
#[inline]
pub(super) fn escaped(backslash: Mask, carry: &mut bool) -> Mask {
    const ODD_BITS: Mask = 0xaaaa;
    let carried = Mask::from(*carry);
    if backslash == 0 {
        *carry = false;
        return carried;
    }
    let may_escape = backslash & !carried;
    let code = ((may_escape << 1) | ODD_BITS).wrapping_sub(may_escape) ^ ODD_BITS;
    let escapes = code & backslash;
    *carry = escapes >> (BLOCK - 1) == 1;
    code ^ (backslash | carried)
}

/// Bit `i` set when an odd number of `quotes`' bits are at or below `i`: from an opening quote
/// up to (not including) its closing one.
#[inline]
pub(super) fn inside_quotes(quotes: Mask) -> Mask {
    let mut inside = quotes;
    for shift in [1, 2, 4, 8] {
        inside ^= inside << shift;
    }
    inside
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn classify(block: &[u8; BLOCK]) -> Classes {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86-64 baseline, so its instructions are always there; the
    // load reads the 16 bytes of `block` and has no alignment requirement.
    unsafe {
        let x = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        let mask = |matches: __m128i| _mm_movemask_epi8(matches) as Mask;
        let equal = |within: __m128i, byte: u8| mask(_mm_cmpeq_epi8(within, _mm_set1_epi8(byte as i8)));
        // `x <= 0x1f` (unsigned): its maximum with 0x1f is 0x1f.
        let low = _mm_set1_epi8(0x1f);
        // `{` and `[`, `}` and `]` differ only in the 0x20 bit.
        let lower = _mm_or_si128(x, _mm_set1_epi8(0x20));
        Classes {
            quote: equal(x, b'"'),
            backslash: equal(x, b'\\'),
            control: mask(_mm_cmpeq_epi8(_mm_max_epu8(x, low), low)),
            open: equal(lower, b'{'),
            close: equal(lower, b'}'),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn classify(block: &[u8; BLOCK]) -> Classes {
    words::classify(block)
}

/// The same classification, eight bytes at a time in a `u64`.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
mod words {
    use super::{Classes, Mask};

    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;

    /// The high bit of each byte of `word` that is zero (exactly: no carry runs between bytes).
    fn zero_bytes(word: u64) -> u64 {
        !(((word & LOW7) + LOW7) | word) & HIGH
    }

    /// The high bits of a word's bytes gathered into one byte (byte `i` to bit `i`).
    fn gather(high: u64) -> Mask {
        ((high >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as Mask
    }

    #[inline(always)]
    pub(super) fn classify(block: &[u8; super::BLOCK]) -> Classes {
        let mut classes = Classes::default();
        for (at, chunk) in block.chunks_exact(8).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let word = u64::from_le_bytes(word);
            let equal = |byte: u8| gather(zero_bytes(word ^ (ONES * u64::from(byte)))) << (8 * at);
            let lower = word | (ONES * 0x20);
            classes.quote |= equal(b'"');
            classes.backslash |= equal(b'\\');
            classes.control |= gather(zero_bytes(word & (ONES * 0xe0))) << (8 * at);
            classes.open |= gather(zero_bytes(lower ^ (ONES * u64::from(b'{')))) << (8 * at);
            classes.close |= gather(zero_bytes(lower ^ (ONES * u64::from(b'}')))) << (8 * at);
        }
        classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte by byte, as the masks must say.
    fn reference(block: &[u8]) -> Classes {
        let mut classes = Classes::default();
        for (i, &byte) in block.iter().enumerate() {
            let bit: Mask = 1 << i;
            match byte {
                b'"' => classes.quote |= bit,
                b'\\' => classes.backslash |= bit,
                b'{' | b'[' => classes.open |= bit,
                b'}' | b']' => classes.close |= bit,
                0..=0x1f => classes.control |= bit,
                _ => {}
            }
        }
        classes
    }

    /// A little pseudo-random text, dense in the bytes that matter.
    fn texts() -> impl Iterator<Item = Vec<u8>> {
        let alphabet = b"\"\\{}[]a \x00\x1f\x20\x7f\xc3\xa9\x5b\x7b\x3b\x9b\xfb\x01";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..4000).map(move |_| {
            (0..BLOCK)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect()
        })
    }

    #[test]
    fn blocks_are_classified_byte_by_byte() {
        for text in texts() {
            let block = text.as_slice().try_into().unwrap();
            assert_eq!(classify(block), reference(&text), "{text:?}");
            assert_eq!(words::classify(block), reference(&text), "{text:?}");
        }
        // Every byte value in every position, among a few neighbours.
        for filler in [b' ', b'"', b'\\', b'{', 0x00, 0x1f, 0x7f, 0x80, 0xff] {
            for position in 0..BLOCK {
                for byte in 0..=u8::MAX {
                    let mut block = [filler; BLOCK];
                    block[position] = byte;
                    assert_eq!(classify(&block), reference(&block), "{block:?}");
                    assert_eq!(words::classify(&block), reference(&block), "{block:?}");
                }
            }
        }
        let short = Classes::at(b"ab\"{", 1);
        assert_eq!(short, reference(b"b\"{"), "past the end, spaces");
    }

    #[test]
    fn escapes_follow_unescaped_backslashes_across_blocks() {
        // Every block of backslashes and other bytes, after a block that ends in an escape or
        // not, against the byte-by-byte reading.
        for carried in [false, true] {
            for backslash in 0..=Mask::MAX {
                let (mut expected, mut escaping) = (0, carried);
                for i in 0..BLOCK {
                    if escaping {
                        expected |= 1 << i;
                    }
                    escaping = !escaping && backslash >> i & 1 == 1;
                }
                let mut carry = carried;
                assert_eq!(
                    escaped(backslash, &mut carry),
                    expected,
                    "{backslash:016b} {carried}"
                );
                assert_eq!(carry, escaping, "{backslash:016b} {carried}");
            }
        }
    }

    #[test]
    fn inside_quotes_spans_opening_to_closing() {
        assert_eq!(inside_quotes(0b1000_0100), 0b0111_1100);
        assert_eq!(inside_quotes(0b1), Mask::MAX);
    }
}
