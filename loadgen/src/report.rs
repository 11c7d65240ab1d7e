//! A run's figures: the text printed at the end, the `--json` document, and the judgement of
//! whether loadgen itself limited the run. When it did, the report says so in words and in
//! the JSON (`"loadgen_bottleneck": true`), and no comparison may be drawn from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::limits::{
    CPU_BOTTLENECK_SHARE, ISSUE_LAG_P99_MAX, MEDIA_DOWNLOADS_IN_FLIGHT_MAX, MEDIA_UPLOADS_IN_FLIGHT_MAX,
    RATE_SHORTFALL_SHARE,
};
use crate::options::RunOptions;
use crate::setup::SetupReport;
use crate::stats::{ErrorCount, Measure, Summary};
use crate::system::CpuTime;

/// The sentence a limited run carries.
pub const BOTTLENECK_SENTENCE: &str = "loadgen was the bottleneck; figures are not the server's";

/// Everything a run found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub target: &'static str,
    pub server: String,
    pub options: RunOptions,
    pub setup: SetupReport,
    pub load: LoadFigures,
    /// Latency figures by measure name (`send_ack`, `delivery`, ...), milliseconds.
    pub measures: BTreeMap<&'static str, Summary>,
    pub errors_by_code: BTreeMap<&'static str, ErrorCount>,
    pub deliveries: DeliveryFigures,
    /// The media operations' figures, when the run had any.
    pub media: Option<MediaFigures>,
    pub loadgen_cpu: CpuFigures,
    /// The server's CPU use over the same span (with `--server-pid`); `cores` is left 0, and
    /// `utilization` is the share of one core.
    pub server_cpu: Option<CpuFigures>,
    pub loadgen_bottleneck: bool,
    pub bottleneck_reasons: Vec<String>,
    /// Loadgen issued the offered rate on time but the answers came back slower: the server
    /// (or what lies between) could not keep up. Not loadgen's limit.
    pub server_saturated: bool,
    /// Acknowledgements that could not be written to `--record-acks`.
    pub ack_write_errors: u64,
    /// Over the whole load (warm-up included, history pre-fill not), each acknowledged send
    /// counted once per offline member of its chat: with `--push-devices` and push on, the
    /// push jobs the server should queue (before coalescing folds them into pushes).
    pub offline_recipient_messages: u64,
    /// The slowest send → ack of the sends intended in each 100 ms of the window (ms; 0 where
    /// none was acknowledged): where in time the tail came from.
    pub send_ack_max_ms_by_100ms: Vec<f64>,
    #[serde(skip)]
    pub histograms: Vec<(Measure, Histogram<u64>)>,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct LoadFigures {
    pub offered_rate_per_s: f64,
    /// Operations handed to the target while the window was open, per second.
    pub issued_rate_per_s: f64,
    /// Successful answers that arrived while the window was open, per second.
    pub achieved_rate_per_s: f64,
    pub window_s: f64,
    pub warmup_s: f64,
    /// Operations intended inside the window: handed to the target, answered, failed.
    pub issued: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub not_issued: u64,
    pub in_flight_cap_waits: u64,
    pub duplicate_acks: u64,
    pub short_pages: u64,
    /// Times a media upload or download waited for one of loadgen's own transfer slots.
    pub media_slot_waits: u64,
}

/// What the media operations moved and how their downloads went. Sends and downloads count
/// measured operations (intended inside the window); the bytes and MB/s (10^6 bytes per
/// second) count file bytes whose send was acknowledged, or whose download was checked whole,
/// inside the window: the achieved transfer rates.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct MediaFigures {
    pub file_bytes: u64,
    /// Media sends acknowledged, and those whose file came from the duplicate pool (issued).
    pub sends: u64,
    pub duplicate_sends: u64,
    pub upload_bytes_in_window: u64,
    pub upload_mb_per_s: f64,
    /// Downloads due (one per measured, acknowledged media message meant to be downloaded
    /// by an online recipient), checked whole, refused by the check (wrong bytes or
    /// length: `CONTENT_MISMATCH`), failed otherwise, never finished, and more than due.
    pub downloads_expected: u64,
    pub downloads_verified: u64,
    pub downloads_corrupt: u64,
    pub downloads_failed: u64,
    pub downloads_missing: u64,
    pub downloads_unexpected: u64,
    pub download_bytes_in_window: u64,
    pub download_mb_per_s: f64,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct DeliveryFigures {
    /// Deliveries expected to online recipients of measured, acknowledged messages.
    pub expected: u64,
    pub received: u64,
    pub missing: u64,
    pub unexpected: u64,
    /// `Resync` events read during the load: events the server or client dropped.
    pub resyncs: u64,
    /// Connections the server closed before the run ended.
    pub streams_lost: u64,
    /// New-message updates that arrived without their message during the load (any
    /// recipient, the senders' own included): they cannot be matched, so each one to a
    /// counted recipient shows as missing too.
    pub bodiless: u64,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct CpuFigures {
    pub user_s: f64,
    pub system_s: f64,
    pub wall_s: f64,
    /// CPUs loadgen may run on (its affinity mask), and its executor threads.
    pub cores: usize,
    pub threads: usize,
    /// (user + system) / (wall × cores).
    pub utilization: f64,
    /// How busy those cores were over the same span, with everything else that ran on them
    /// (other processes, interrupts, loopback TCP in softirqs); `None` where unknown.
    pub cores_busy: Option<f64>,
}

impl CpuFigures {
    pub fn new(cpu: CpuTime, wall: Duration, cores: usize, threads: usize) -> CpuFigures {
        let busy = cpu.total().as_secs_f64();
        let wall_s = wall.as_secs_f64();
        CpuFigures {
            user_s: cpu.user.as_secs_f64(),
            system_s: cpu.system.as_secs_f64(),
            wall_s,
            cores,
            threads,
            utilization: if wall_s > 0.0 { busy / (wall_s * cores.max(1) as f64) } else { 0.0 },
            cores_busy: None,
        }
    }
}

/// Whether loadgen limited the run, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub loadgen_bottleneck: bool,
    pub reasons: Vec<String>,
    pub server_saturated: bool,
}

/// Judges a run. Loadgen limited it when its CPU use, or the busy share of the cores it may
/// use (anything else running there takes them from loadgen), passed `CPU_BOTTLENECK_SHARE`;
/// when it issued 1% of its operations later than `ISSUE_LAG_P99_MAX` (its own lateness is
/// in every latency it measures); or when the achieved rate fell short of the offered one
/// while the server reported no errors and loadgen itself did not issue the offered rate (it
/// fell behind or hit its in-flight cap). When loadgen issued on time and the answers still
/// fell short without errors, the server was saturated instead: that is a finding about the
/// server, not a reason to distrust the figures.
pub fn judge(load: &LoadFigures, cpu: &CpuFigures, issue_lag_p99_ms: f64, server_reported_errors: bool) -> Judgement {
    let mut reasons = Vec::new();
    if cpu.utilization > CPU_BOTTLENECK_SHARE {
        reasons.push(format!(
            "loadgen used {:.0}% of the {} core(s) it may use (over {:.0}%)",
            cpu.utilization * 100.0,
            cpu.cores,
            CPU_BOTTLENECK_SHARE * 100.0
        ));
    } else if let Some(busy) = cpu.cores_busy.filter(|&busy| busy > CPU_BOTTLENECK_SHARE) {
        reasons.push(format!(
            "the {} core(s) loadgen may use were {:.0}% busy (loadgen itself {:.0}%; the rest is other \
             processes, interrupts and kernel network work)",
            cpu.cores,
            busy * 100.0,
            cpu.utilization * 100.0
        ));
    }
    if load.media_slot_waits > 0 {
        reasons.push(format!(
            "media transfers waited {} times for one of loadgen's own upload or download slots \
             ({MEDIA_UPLOADS_IN_FLIGHT_MAX} and {MEDIA_DOWNLOADS_IN_FLIGHT_MAX} in flight at most)",
            load.media_slot_waits
        ));
    }
    if issue_lag_p99_ms > ISSUE_LAG_P99_MAX.as_secs_f64() * 1000.0 {
        reasons.push(format!(
            "loadgen issued 1% of its operations more than {issue_lag_p99_ms:.2} ms after their intended time \
             (its own lateness, over {} ms)",
            ISSUE_LAG_P99_MAX.as_millis()
        ));
    }
    let offered = load.offered_rate_per_s;
    let short = load.achieved_rate_per_s < RATE_SHORTFALL_SHARE * offered;
    let issued_short = load.issued_rate_per_s < RATE_SHORTFALL_SHARE * offered || load.not_issued > 0;
    if short && !server_reported_errors && (issued_short || load.in_flight_cap_waits > 0) {
        reasons.push(format!(
            "achieved {:.0}/s of {:.0}/s offered without server errors, and loadgen issued only {:.0}/s \
             ({} operations never issued, {} waits for its in-flight cap)",
            load.achieved_rate_per_s, offered, load.issued_rate_per_s, load.not_issued, load.in_flight_cap_waits
        ));
    }
    let server_saturated = short && !server_reported_errors && reasons.is_empty();
    Judgement { loadgen_bottleneck: !reasons.is_empty(), reasons, server_saturated }
}

impl Report {
    /// The text printed at the end of a run.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let options = &self.options;
        let _ = writeln!(
            out,
            "ferrogram-loadgen {}: scenario {} against {} at {}",
            self.version,
            serde_json::to_value(options.scenario).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            self.target,
            self.server
        );
        let setup = &self.setup;
        let _ = writeln!(
            out,
            "setup: {} users ({} online, one connection each), {} chats, {} channel follows, {} pre-filled messages; \
             provisioning {:.1} s ({:.0} logins/s), setup {:.1} s",
            setup.users,
            setup.online_users,
            setup.chats,
            setup.follows,
            setup.prefill_messages,
            setup.provision_s,
            setup.provision_rate_per_s,
            setup.setup_s
        );
        if let Some(memory) = &setup.server_memory {
            let _ = writeln!(
                out,
                "server memory (VmRSS): {} KiB before, {} KiB after sign-up, {} KiB after {} connections \
                 ({:.0} bytes per connection), {} KiB after setup",
                memory.before_kib,
                memory.after_sign_up_kib,
                memory.after_connect_kib,
                memory.connections,
                memory.per_connection_bytes,
                memory.after_setup_kib
            );
        }
        let load = &self.load;
        let _ = writeln!(
            out,
            "load: offered {:.0}/s for {:.1} s (after {:.1} s warm-up); issued {:.0}/s; achieved {:.0}/s",
            load.offered_rate_per_s, load.window_s, load.warmup_s, load.issued_rate_per_s, load.achieved_rate_per_s
        );
        let _ = writeln!(
            out,
            "operations in the window: {} issued, {} ok, {} failed, {} never issued; {} in-flight cap waits",
            load.issued, load.succeeded, load.failed, load.not_issued, load.in_flight_cap_waits
        );
        let _ = writeln!(
            out,
            "{:<14} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}   (ms, from the intended start)",
            "measure", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, summary) in &self.measures {
            if summary.count == 0 {
                continue;
            }
            let _ = writeln!(
                out,
                "{:<14} {:>10} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
                name, summary.count, summary.p50_ms, summary.p90_ms, summary.p99_ms, summary.p999_ms, summary.max_ms
            );
        }
        if self.errors_by_code.is_empty() {
            let _ = writeln!(out, "errors: none");
        } else {
            let listed: Vec<String> = self
                .errors_by_code
                .iter()
                .map(|(code, count)| {
                    format!("{code} {}{}", count.count, if count.from_server { " (server)" } else { " (loadgen)" })
                })
                .collect();
            let _ = writeln!(out, "errors: {}", listed.join(", "));
        }
        let deliveries = &self.deliveries;
        let _ = writeln!(
            out,
            "deliveries: {} expected, {} received, {} missing, {} unexpected; {} resyncs, {} connections lost, \
             {} updates without their message",
            deliveries.expected,
            deliveries.received,
            deliveries.missing,
            deliveries.unexpected,
            deliveries.resyncs,
            deliveries.streams_lost,
            deliveries.bodiless
        );
        if let Some(media) = &self.media {
            let _ = writeln!(
                out,
                "media: files of {} bytes; {} sends acknowledged ({} from the duplicate pool); uploaded {:.1} MB/s; \
                 downloads: {} due, {} checked whole, {} with wrong content, {} failed, {} missing, {} unexpected; \
                 downloaded {:.1} MB/s",
                media.file_bytes,
                media.sends,
                media.duplicate_sends,
                media.upload_mb_per_s,
                media.downloads_expected,
                media.downloads_verified,
                media.downloads_corrupt,
                media.downloads_failed,
                media.downloads_missing,
                media.downloads_unexpected,
                media.download_mb_per_s
            );
        }
        if setup.push_devices > 0 || self.offline_recipient_messages > 0 {
            let _ = writeln!(
                out,
                "push: {} users registered a push device; acknowledged sends reached {} offline members \
                 (warm-up included)",
                setup.push_devices, self.offline_recipient_messages
            );
        }
        if load.duplicate_acks > 0 || load.short_pages > 0 || self.ack_write_errors > 0 || load.media_slot_waits > 0 {
            let _ = writeln!(
                out,
                "also: {} duplicate acks, {} short history pages, {} acks not written, {} media slot waits",
                load.duplicate_acks, load.short_pages, self.ack_write_errors, load.media_slot_waits
            );
        }
        let cpu = &self.loadgen_cpu;
        let _ = writeln!(
            out,
            "loadgen CPU: {:.1}% of {} core(s), {} threads (user {:.2} s, system {:.2} s over {:.2} s of load); \
             its cores {} busy in all",
            cpu.utilization * 100.0,
            cpu.cores,
            cpu.threads,
            cpu.user_s,
            cpu.system_s,
            cpu.wall_s,
            cpu.cores_busy.map_or("?".to_owned(), |busy| format!("{:.0}%", busy * 100.0))
        );
        if let Some(server) = &self.server_cpu {
            let _ = writeln!(
                out,
                "server CPU: {:.1}% of one core (user {:.2} s, system {:.2} s, all its threads)",
                server.utilization * 100.0,
                server.user_s,
                server.system_s
            );
        }
        if self.loadgen_bottleneck {
            let _ = writeln!(out, "VERDICT: {BOTTLENECK_SENTENCE}:");
            for reason in &self.bottleneck_reasons {
                let _ = writeln!(out, "  - {reason}");
            }
        } else if self.server_saturated {
            let _ = writeln!(
                out,
                "VERDICT: the server did not keep up with the offered rate (loadgen issued it on time); \
                 latencies include the growing queue"
            );
        } else {
            let _ = writeln!(out, "VERDICT: loadgen kept up; the figures are the target's");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(offered: f64, issued: f64, achieved: f64) -> LoadFigures {
        LoadFigures {
            offered_rate_per_s: offered,
            issued_rate_per_s: issued,
            achieved_rate_per_s: achieved,
            ..LoadFigures::default()
        }
    }

    fn cpu(utilization: f64) -> CpuFigures {
        CpuFigures { utilization, cores: 1, ..CpuFigures::default() }
    }

    // A busy loadgen, or one that could not issue the offered rate, is the bottleneck; a
    // server that fell behind while loadgen issued on time is saturated, not a loadgen limit;
    // a server that refused work explains the shortfall itself.
    #[test]
    fn the_judgement_separates_loadgen_limits_from_server_limits() {
        let fine = judge(&load(1000.0, 1000.0, 999.0), &cpu(0.30), 0.2, false);
        assert_eq!((fine.loadgen_bottleneck, fine.server_saturated), (false, false));

        let busy = judge(&load(1000.0, 1000.0, 1000.0), &cpu(0.85), 0.2, false);
        assert!(busy.loadgen_bottleneck);
        assert!(busy.reasons[0].contains("85%"), "{:?}", busy.reasons);

        let crowded = CpuFigures { cores_busy: Some(0.95), ..cpu(0.40) };
        let crowded = judge(&load(1000.0, 1000.0, 1000.0), &crowded, 0.2, false);
        assert!(crowded.loadgen_bottleneck && crowded.reasons[0].contains("95% busy"), "{:?}", crowded.reasons);

        let late = judge(&load(1000.0, 1000.0, 1000.0), &cpu(0.30), 3.5, false);
        assert!(late.loadgen_bottleneck && late.reasons[0].contains("3.50 ms"), "{:?}", late.reasons);

        let behind = judge(&load(1000.0, 800.0, 790.0), &cpu(0.50), 0.2, false);
        assert!(behind.loadgen_bottleneck && !behind.server_saturated);

        let saturated = judge(&load(1000.0, 1000.0, 600.0), &cpu(0.50), 0.2, false);
        assert!(!saturated.loadgen_bottleneck && saturated.server_saturated);

        let refusing = judge(&load(1000.0, 800.0, 600.0), &cpu(0.50), 0.2, true);
        assert!(!refusing.loadgen_bottleneck && !refusing.server_saturated);

        let waited = LoadFigures { media_slot_waits: 3, ..load(100.0, 100.0, 100.0) };
        let waited = judge(&waited, &cpu(0.30), 0.2, false);
        assert!(waited.loadgen_bottleneck && waited.reasons[0].contains("waited 3 times"), "{:?}", waited.reasons);
    }
}
