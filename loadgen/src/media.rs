//! The media scenario's files: content that is a function of a seed, so the recipient of a
//! media message can regenerate every byte and compare what it downloaded, and the caption
//! that carries the seed (behind the usual send-time stamp) from the sender to the recipient.
//!
//! Content is seekable: byte `p` of a file is byte `p % 8` of word `p / 8`, and each word is
//! a SplitMix64 output of the seed and the word's index. Any range can be generated or checked
//! on its own, in any order, without holding the whole file, and one core generates it at
//! several GB/s, far above what one server core moves. Two seeds give unrelated content (no
//! chunk of one is a chunk of the other), so the server deduplicates only what loadgen meant
//! to repeat: files drawn from the small pool of `--media-pool` seeds.

use crate::stamp;

/// One file's content: `bytes` bytes generated from `seed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Content {
    pub seed: u64,
    pub bytes: u64,
}

/// Where downloaded bytes first differ from the content, or why their length is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    #[error("byte {offset} is {found:#04x}, {expected:#04x} was sent")]
    Byte { offset: u64, expected: u8, found: u8 },
    #[error("{found} bytes arrived at offset {offset} where the file has {expected}")]
    Length { offset: u64, expected: u64, found: u64 },
}

impl Content {
    /// Writes the content's bytes from `offset` on into `out` (never past the end: the
    /// caller asks for a range of the file).
    pub fn fill(&self, offset: u64, out: &mut [u8]) {
        assert!(offset + out.len() as u64 <= self.bytes, "a range of the file");
        let mut position = offset;
        let mut rest = out;
        // A head up to the next word boundary, whole words, then a tail.
        let head = ((8 - position % 8) % 8).min(rest.len() as u64) as usize;
        if head > 0 {
            let word = self.word(position / 8).to_le_bytes();
            let from = (position % 8) as usize;
            rest[..head].copy_from_slice(&word[from..from + head]);
            rest = &mut rest[head..];
            position += head as u64;
        }
        let mut index = position / 8;
        let mut words = rest.chunks_exact_mut(8);
        for chunk in &mut words {
            chunk.copy_from_slice(&self.word(index).to_le_bytes());
            index += 1;
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            let word = self.word(index).to_le_bytes();
            let length = tail.len();
            tail.copy_from_slice(&word[..length]);
        }
    }

    /// `length` bytes of the content from `offset` on.
    pub fn range(&self, offset: u64, length: usize) -> Vec<u8> {
        let mut bytes = vec![0; length];
        self.fill(offset, &mut bytes);
        bytes
    }

    /// Checks downloaded `bytes` found at `offset`: every byte must be the content's, and the
    /// range must not run past the end of the file.
    pub fn check(&self, offset: u64, bytes: &[u8]) -> Result<(), Mismatch> {
        let end = offset.saturating_add(bytes.len() as u64);
        if end > self.bytes {
            return Err(Mismatch::Length {
                offset,
                expected: self.bytes.saturating_sub(offset),
                found: bytes.len() as u64,
            });
        }
        // Compared a block at a time against freshly generated content: no allocation per
        // byte, and the comparison itself is a memcmp.
        let mut expected = [0u8; CHECK_BLOCK_BYTES];
        for (block, found) in bytes.chunks(CHECK_BLOCK_BYTES).enumerate() {
            let at = offset + (block * CHECK_BLOCK_BYTES) as u64;
            let expected = &mut expected[..found.len()];
            self.fill(at, expected);
            if expected != found {
                let index = expected.iter().zip(found).position(|(a, b)| a != b).unwrap_or(0);
                return Err(Mismatch::Byte {
                    offset: at + index as u64,
                    expected: expected[index],
                    found: found[index],
                });
            }
        }
        Ok(())
    }

    fn word(&self, index: u64) -> u64 {
        splitmix64(self.seed.wrapping_add(index.wrapping_mul(GOLDEN_GAMMA)))
    }
}

/// Bytes compared at a time by [`Content::check`].
const CHECK_BLOCK_BYTES: usize = 4096;
/// SplitMix64's increment (2^64 / φ).
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function: a bijection of 64-bit values that mixes every input bit.
pub fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a media message's caption carries besides the send-time stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptionInfo {
    pub content: Content,
    /// Whether the recipient is to download the file (`--media-download-fraction`).
    pub download: bool,
}

const CAPTION_TAG: &str = "media";

/// The caption of a media message intended at `unix_ns`:
/// `lg:<unix_ns>:media:<seed, 16 hex digits>:<bytes>:<0 or 1>`. It starts with the stamp, so
/// the delivery measure reads it like any message's text.
pub fn caption(unix_ns: u64, info: CaptionInfo) -> String {
    format!(
        "{}{CAPTION_TAG}:{:016x}:{}:{}",
        stamp::text(unix_ns, 0),
        info.content.seed,
        info.content.bytes,
        u8::from(info.download)
    )
}

/// What a caption written by [`caption`] carries; `None` for any other text.
pub fn parse_caption(text: &str) -> Option<CaptionInfo> {
    stamp::parse(text)?;
    let mut fields = text.split(':').skip(2);
    if fields.next()? != CAPTION_TAG {
        return None;
    }
    let seed = u64::from_str_radix(fields.next()?, 16).ok()?;
    let bytes = fields.next()?.parse().ok()?;
    let download = match fields.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    if fields.next().is_some() {
        return None;
    }
    Some(CaptionInfo { content: Content { seed, bytes }, download })
}

/// The longest caption [`caption`] writes: the stamp, the tag, 16 hex digits, 20 decimal
/// digits, the flag and the separators.
pub const CAPTION_BYTES_MAX: usize = stamp::STAMP_BYTES + CAPTION_TAG.len() + 1 + 16 + 1 + 20 + 1 + 1;

const _: () = assert!(CAPTION_BYTES_MAX <= ferrogram_net::limits::MEDIA_CAPTION_MAX);

/// Chooses each operation's content: a file of the small duplicate pool with probability
/// `duplicate_fraction`, else a file no other operation of the run uploads. Seeds come from
/// `salt`, drawn anew for every run, so a second run against the same server is not
/// deduplicated against the first.
#[derive(Clone, Copy, Debug)]
pub struct ContentPicker {
    pub salt: u64,
    pub bytes: u64,
    pub duplicate_fraction: f64,
    pub pool: usize,
}

impl ContentPicker {
    /// The content of operation `index` of the schedule, and whether it came from the pool.
    pub fn pick(&self, rng: &mut fastrand::Rng, index: u64) -> (Content, bool) {
        if self.pool > 0 && rng.f64() < self.duplicate_fraction {
            let member = rng.usize(0..self.pool) as u64;
            // The pool's seeds and the unique ones come from two disjoint inputs of a
            // bijection (top bit set or not), so they never coincide.
            return (Content { seed: splitmix64(self.salt ^ (1 << 63 | member)), bytes: self.bytes }, true);
        }
        (Content { seed: splitmix64(self.salt ^ (index & !(1 << 63))), bytes: self.bytes }, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Any range generated on its own equals the same bytes of the whole file, whatever its
    // alignment; two seeds give different content.
    #[test]
    fn content_is_seekable_and_depends_on_the_seed() {
        let content = Content { seed: 42, bytes: 10_007 };
        let whole = content.range(0, 10_007);
        for (offset, length) in [(0, 1), (3, 5), (5, 16), (8, 8), (4095, 4099), (10_000, 7), (10_006, 1)] {
            assert_eq!(content.range(offset, length), whole[offset as usize..offset as usize + length], "{offset}");
        }
        let other = Content { seed: 43, bytes: 10_007 }.range(0, 10_007);
        let same = whole.iter().zip(&other).filter(|(a, b)| a == b).count();
        assert!(same < 100, "{same} equal bytes of 10,007");
    }

    // The verifier accepts the content's own bytes at any offset and catches a single flipped
    // byte (naming its offset), a range past the end, and another file's bytes.
    #[test]
    fn the_verifier_catches_wrong_bytes() {
        let content = Content { seed: 7, bytes: 3 * 1024 * 1024 + 5 };
        let range = content.range(1 << 20, 1 << 20);
        assert_eq!(content.check(1 << 20, &range), Ok(()));
        let mut corrupted = range.clone();
        corrupted[123_457] ^= 0x20;
        assert_eq!(
            content.check(1 << 20, &corrupted),
            Err(Mismatch::Byte { offset: (1 << 20) + 123_457, expected: range[123_457], found: range[123_457] ^ 0x20 })
        );
        let tail = content.range(3 << 20, 5);
        assert_eq!(content.check(3 << 20, &tail), Ok(()));
        assert!(matches!(content.check(3 << 20, &[tail.as_slice(), &[0]].concat()), Err(Mismatch::Length { .. })));
        let stranger = Content { seed: 8, bytes: content.bytes }.range(0, 4096);
        assert!(matches!(content.check(0, &stranger), Err(Mismatch::Byte { .. })));
    }

    // A caption round-trips, starts with the stamp the delivery measure reads, fits the
    // protocol's caption limit at its longest, and other texts are not taken for one.
    #[test]
    fn captions_round_trip() {
        let info = CaptionInfo { content: Content { seed: u64::MAX, bytes: u64::MAX }, download: true };
        let text = caption(1_764_000_000_123_456_789, info);
        assert_eq!(text.len(), CAPTION_BYTES_MAX);
        assert_eq!(stamp::parse(&text), Some(1_764_000_000_123_456_789));
        assert_eq!(parse_caption(&text), Some(info));
        let small = CaptionInfo { content: Content { seed: 1, bytes: 262_144 }, download: false };
        assert_eq!(parse_caption(&caption(5, small)), Some(small));
        assert_eq!(parse_caption(&stamp::text(5, 64)), None, "a text message");
        assert_eq!(parse_caption("lg:5:media:zz:1:1"), None);
        assert_eq!(parse_caption("lg:5:media:01:1:2"), None);
        assert_eq!(parse_caption("lg:5:media:01:1:1:extra"), None);
    }

    // About the asked share of operations draws from the pool, pool files repeat, and unique
    // files never meet a pool file or each other.
    #[test]
    fn the_picker_repeats_only_pool_files() {
        let picker = ContentPicker { salt: 99, bytes: 1000, duplicate_fraction: 0.25, pool: 4 };
        let mut rng = fastrand::Rng::with_seed(1);
        let picks: Vec<(Content, bool)> = (0..10_000).map(|index| picker.pick(&mut rng, index)).collect();
        let pooled: std::collections::HashSet<u64> =
            picks.iter().filter(|(_, pooled)| *pooled).map(|(content, _)| content.seed).collect();
        let unique: Vec<u64> = picks.iter().filter(|(_, pooled)| !*pooled).map(|(content, _)| content.seed).collect();
        let share = (picks.len() - unique.len()) as f64 / picks.len() as f64;
        assert!((0.22..0.28).contains(&share), "{share}");
        assert_eq!(pooled.len(), 4);
        let distinct: std::collections::HashSet<u64> = unique.iter().copied().collect();
        assert_eq!(distinct.len(), unique.len());
        assert!(distinct.is_disjoint(&pooled));
        let never = ContentPicker { duplicate_fraction: 0.0, ..picker };
        assert!((0..100).all(|index| !never.pick(&mut rng, index).1));
    }
}
