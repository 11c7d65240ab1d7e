//! `ferrogram admin stats --metrics ADDR`: a running server's media storage figures (files,
//! logical and stored bytes, dedup ratio, chunks, segment bytes and garbage), read from its
//! Prometheus endpoint and printed as a table, one row per shard and a total.
//!
//! Why from the metrics and not from the data directory: the figures live in each shard's
//! media index, which is rebuilt from a checkpoint and the log when the engine opens; the
//! running engine holds the data directory's lock, so an offline reader would have to wait
//! for the server to stop. The server already samples every shard's figures once a second
//! for its metrics, so this works while it runs and costs the shards nothing more.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};

/// How long fetching the metrics may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest metrics page read (a few KiB per shard in practice).
pub const METRICS_BYTES_MAX: u64 = 16 << 20;

/// The media series a row shows, by their name after `ferrogram_media_`.
const COLUMNS: [&str; 9] = [
    "files",
    "logical_bytes",
    "stored_bytes",
    "chunks",
    "chunks_unreferenced",
    "physical_bytes",
    "garbage_bytes",
    "segments",
    "uploads",
];

/// One shard's (or the total's) figures, by series name.
pub type Figures = BTreeMap<&'static str, u64>;

/// Prints the table for the server whose metrics are served at `address`.
pub fn stats(address: SocketAddr) -> anyhow::Result<()> {
    let text = fetch(address).with_context(|| format!("reading the metrics at {address}"))?;
    let shards = parse(&text);
    if shards.is_empty() {
        bail!("{address} serves no ferrogram_media_ series: is it a ferrogram server's --metrics address?");
    }
    print!("{}", render(&shards));
    Ok(())
}

/// `GET /metrics` over plain HTTP/1.0; the body of a 200 answer.
fn fetch(address: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, FETCH_TIMEOUT)?;
    stream.set_read_timeout(Some(FETCH_TIMEOUT))?;
    stream.set_write_timeout(Some(FETCH_TIMEOUT))?;
    stream.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())?;
    let mut answer = Vec::new();
    stream.take(METRICS_BYTES_MAX).read_to_end(&mut answer)?;
    let answer = String::from_utf8(answer).context("the answer is not UTF-8")?;
    let Some((head, body)) = answer.split_once("\r\n\r\n") else { bail!("not an HTTP answer") };
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("the server answered `{status}`");
    }
    Ok(body.to_owned())
}

/// The media figures of each shard found in a Prometheus text page.
pub fn parse(text: &str) -> BTreeMap<u32, Figures> {
    let mut shards: BTreeMap<u32, Figures> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("ferrogram_media_") else { continue };
        let Some((name, rest)) = rest.split_once("{shard=\"") else { continue };
        let Some((shard, value)) = rest.split_once("\"} ") else { continue };
        let (Ok(shard), Ok(value)) = (shard.parse::<u32>(), value.trim().parse::<u64>()) else { continue };
        if let Some(column) = COLUMNS.iter().find(|column| **column == name) {
            shards.entry(shard).or_default().insert(column, value);
        }
    }
    shards
}

/// The table: a row per shard, then the total, with the dedup ratio computed from the sums.
pub fn render(shards: &BTreeMap<u32, Figures>) -> String {
    let mut total = Figures::new();
    for figures in shards.values() {
        for (name, value) in figures {
            *total.entry(name).or_default() += value;
        }
    }
    let header = ["shard", "files", "logical", "stored", "dedup", "chunks", "unreferenced", "physical", "garbage"];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    let row = |label: String, figures: &Figures| {
        let get = |name: &str| figures.get(name).copied().unwrap_or(0);
        vec![
            label,
            get("files").to_string(),
            size_text(get("logical_bytes")),
            size_text(get("stored_bytes")),
            format!("{:.2}", dedup_ratio(get("logical_bytes"), get("stored_bytes"))),
            get("chunks").to_string(),
            get("chunks_unreferenced").to_string(),
            size_text(get("physical_bytes")),
            size_text(get("garbage_bytes")),
        ]
    };
    for (shard, figures) in shards {
        rows.push(row(shard.to_string(), figures));
    }
    rows.push(row("all".to_owned(), &total));
    let widths: Vec<usize> =
        (0..header.len()).map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).enumerate().map(|(index, (cell, width))| align(index, cell, *width)).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str("logical: sum of file sizes; stored: chunk bytes after dedup; dedup: logical / stored;\n");
    out.push_str("physical: segment files on disk; garbage: segment bytes compaction can reclaim\n");
    out
}

/// Logical over stored bytes, 1 when nothing is stored (as the server computes it).
pub fn dedup_ratio(logical: u64, stored: u64) -> f64 {
    if stored == 0 {
        1.0
    } else {
        logical as f64 / stored as f64
    }
}

fn align(column: usize, cell: &str, width: usize) -> String {
    if column == 0 {
        format!("{cell:<width$}")
    } else {
        format!("{cell:>width$}")
    }
}

fn size_text(bytes: u64) -> String {
    crate::client::human_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The media series are found per shard among the rest, and the total's dedup ratio comes
    // from the summed bytes, not from averaging the shards' ratios.
    #[test]
    fn media_series_become_a_table() {
        let text = "# HELP ferrogram_media_files Files stored.\n\
                    ferrogram_media_files{shard=\"0\"} 2\n\
                    ferrogram_media_files{shard=\"1\"} 1\n\
                    ferrogram_media_logical_bytes{shard=\"0\"} 3000\n\
                    ferrogram_media_logical_bytes{shard=\"1\"} 1000\n\
                    ferrogram_media_stored_bytes{shard=\"0\"} 1000\n\
                    ferrogram_media_stored_bytes{shard=\"1\"} 1000\n\
                    ferrogram_media_dedup_ratio{shard=\"0\"} 3\n\
                    ferrogram_media_part_bytes_total{shard=\"0\"} 99\n\
                    ferrogram_requests_total{shard=\"0\",method=\"get_file\"} 5\n\
                    ferrogram_media_garbage_bytes{shard=\"x\"} 1\n";
        let shards = parse(text);
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[&0]["files"], 2);
        assert_eq!(shards[&1]["logical_bytes"], 1000);
        assert!(!shards[&0].contains_key("part_bytes_total"), "counters are not table columns");
        let table = render(&shards);
        let all = table.lines().find(|line| line.starts_with("all")).expect("a total row");
        assert!(all.contains("3.91 KiB") && all.contains("1.95 KiB") && all.contains("2.00"), "{table}");
        assert_eq!(dedup_ratio(0, 0), 1.0);
    }
}
