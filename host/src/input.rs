//! Reading user-supplied files: bounded sizes, and evidence given as raw bytes, hex or base64.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;

/// Reads at most `max` bytes from a file, or from standard input for `-`.
pub fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let limit = max as u64 + 1;
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut buf)
            .context("reading standard input")?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("opening {}", path.display()))?
            .take(limit)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    if buf.len() > max {
        bail!("{} is larger than {} bytes", path.display(), max);
    }
    Ok(buf)
}

/// Turns hex or base64 text into bytes; returns the input unchanged when it is not text of
/// either kind (raw binary evidence).
pub fn decode_text(bytes: &[u8]) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return bytes.to_vec();
    };
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return bytes.to_vec();
    }
    let hex_body = compact
        .strip_prefix("0x")
        .or_else(|| compact.strip_prefix("0X"))
        .unwrap_or(&compact);
    if hex_body.len().is_multiple_of(2)
        && hex_body.chars().all(|c| c.is_ascii_hexdigit())
        && let Ok(b) = hex::decode(hex_body)
    {
        return b;
    }
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        if let Ok(b) = engine.decode(&compact) {
            return b;
        }
    }
    bytes.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_base64_and_binary() {
        assert_eq!(decode_text(b"0a0B\n"), vec![0x0a, 0x0b]);
        assert_eq!(decode_text(b"AQID"), vec![1, 2, 3]);
        assert_eq!(decode_text(&[0xff, 0x00, 0x01]), vec![0xff, 0x00, 0x01]);
        assert_eq!(decode_text(b"not evidence!"), b"not evidence!".to_vec());
    }
}
