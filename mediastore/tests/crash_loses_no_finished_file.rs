// Proves crash safety against a model: random uploads (often of shared or shifted content),
// finishes, references, releases, expiries, compactions and sweeps, with crashes at random
// points — plain ones that lose every unsynced segment write and journal record (keeping a
// torn piece of the segment tail), and ones injected right before or right after the journal
// sync of a finish or a reference change. After every restart: every finished file the model
// holds is there and reads back byte for byte, nothing the model deleted came back, no chunk
// is referenced but missing and no refcount needs repair. At the end, dropping every
// reference and compacting leaves no bytes at all, so nothing a crash orphaned leaks.
// Seeds: MEDIASTORE_MODEL_SEEDS (default 12); a failure names its seed.

mod support;

use std::collections::BTreeMap;

use ferrogram_mediastore::*;
use support::*;

const STEPS: usize = 150;
const TTL_MS: u64 = 50_000;
const GRACE_MS: u64 = 20_000;

fn model_config() -> MediaConfig {
    let mut config = config();
    config.uploader_reference_ttl_ms = TTL_MS;
    config.grace_period_ms = GRACE_MS;
    config.upload_idle_timeout_ms = 30_000;
    config
}

#[derive(Clone, Debug)]
struct ModelFile {
    access_hash: AccessHash,
    bytes: Vec<u8>,
    references: u64,
    uploader_expires_at: Option<u64>,
}

struct InFlight {
    id: UploadId,
    bytes: Vec<u8>,
    part_bytes: usize,
    sent: Vec<bool>,
    last_activity: u64,
}

struct Run {
    seed: u64,
    rng: u64,
    now: u64,
    disk: MemorySegments,
    journal: MemoryJournal,
    shard: TestShard,
    files: BTreeMap<FileId, ModelFile>,
    uploads: Vec<InFlight>,
    contents: Vec<Vec<u8>>,
    counts: BTreeMap<&'static str, usize>,
}

impl Run {
    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn random(&mut self, below: u64) -> u64 {
        splitmix(&mut self.rng) % below.max(1)
    }

    fn new_content(&mut self) -> Vec<u8> {
        let choice = self.random(10);
        if choice < 3 && !self.contents.is_empty() {
            let index = self.random(self.contents.len() as u64) as usize;
            let mut bytes = self.contents[index].clone();
            if choice == 0 {
                let mut prefix = pseudo_random(self.random(5000) as usize + 1, self.rng);
                prefix.extend_from_slice(&bytes);
                bytes = prefix;
            }
            bytes
        } else {
            let size = match self.random(6) {
                0 => self.random(3) as usize,
                1 => self.random(64 * KIB as u64) as usize,
                _ => self.random(3 * MIB as u64 / 2) as usize,
            };
            pseudo_random(size, self.rng)
        }
    }

    fn start_upload(&mut self) {
        let bytes = self.new_content();
        self.contents.push(bytes.clone());
        let part_bytes = [16 * KIB, 64 * KIB, 128 * KIB, 512 * KIB][self.random(4) as usize];
        let owner = self.random(3);
        let id = start(&mut self.shard, owner, self.now);
        let count = bytes.len().div_ceil(part_bytes);
        self.uploads.push(InFlight { id, bytes, part_bytes, sent: vec![false; count], last_activity: self.now });
    }

    fn send_parts(&mut self) {
        if self.uploads.is_empty() {
            return;
        }
        let index = self.random(self.uploads.len() as u64) as usize;
        let count = self.uploads[index].sent.len();
        for _ in 0..self.random(16) + 1 {
            let part = if self.random(3) == 0 {
                self.random(count as u64) as usize
            } else {
                match self.uploads[index].sent.iter().position(|sent| !sent) {
                    Some(part) => part,
                    None => break,
                }
            };
            if count == 0 {
                break;
            }
            let upload = &self.uploads[index];
            let bytes =
                &upload.bytes[part * upload.part_bytes..((part + 1) * upload.part_bytes).min(upload.bytes.len())];
            let result = block_on(self.shard.put_part(upload.id, part as u32, bytes, TimestampMs(self.now)));
            result.unwrap_or_else(|error| panic!("seed {}: part {part}: {error}", self.seed));
            self.uploads[index].sent[part] = true;
            self.uploads[index].last_activity = self.now;
        }
    }

    fn finish(&mut self, fault: Option<JournalFault>) {
        let Some(index) = self.uploads.iter().position(|upload| upload.sent.iter().all(|sent| *sent)) else { return };
        let upload = self.uploads.remove(index);
        let request = finish_request(&upload.bytes, upload.part_bytes);
        let predicted = self.shard.state().next_file_id(VShard::new(7).expect("vshard"));
        if let Some(fault) = fault {
            self.journal.inject(fault);
        }
        match block_on(self.shard.finish(upload.id, request, TimestampMs(self.now))) {
            Ok(file) => {
                self.count("finished");
                assert!(fault.is_none(), "seed {}: finish succeeded through an injected fault", self.seed);
                assert_eq!(file.file, predicted);
                self.files.insert(
                    file.file,
                    ModelFile {
                        access_hash: file.access_hash,
                        bytes: upload.bytes,
                        references: 0,
                        uploader_expires_at: Some(self.now + TTL_MS),
                    },
                );
            }
            Err(error) => {
                assert!(fault.is_some(), "seed {}: finish failed: {error}", self.seed);
                self.count("finish crashed at a sync");
                self.crash_and_reopen(0);
                let recovered = self.shard.state().file(predicted).map(|entry| entry.meta.access_hash);
                match fault {
                    Some(JournalFault::FailBeforeSync) => {
                        assert!(recovered.is_none(), "seed {}: a finish that never synced survived", self.seed)
                    }
                    _ => {
                        let access_hash =
                            recovered.unwrap_or_else(|| panic!("seed {}: a synced finish was lost", self.seed));
                        self.files.insert(
                            predicted,
                            ModelFile {
                                access_hash,
                                bytes: upload.bytes,
                                references: 0,
                                uploader_expires_at: Some(self.now + TTL_MS),
                            },
                        );
                    }
                }
                self.check();
            }
        }
    }

    fn pick_file(&mut self, referenced: bool) -> Option<FileId> {
        let candidates: Vec<FileId> =
            self.files.iter().filter(|(_, file)| !referenced || file.references > 0).map(|(id, _)| *id).collect();
        (!candidates.is_empty()).then(|| candidates[self.random(candidates.len() as u64) as usize])
    }

    fn take_reference(&mut self, fault: Option<JournalFault>) {
        let Some(id) = self.pick_file(false) else { return };
        let access_hash = self.files[&id].access_hash;
        if let Some(fault) = fault {
            self.journal.inject(fault);
        }
        let result = block_on(self.shard.take_reference(id, access_hash));
        let applied = match (result, fault) {
            (Ok(()), None) => true,
            (Err(_), Some(fault)) => {
                self.count("reference crashed at a sync");
                self.crash_and_reopen(0);
                fault == JournalFault::FailAfterSync
            }
            (result, fault) => panic!("seed {}: take_reference {result:?} with fault {fault:?}", self.seed),
        };
        if applied {
            let file = self.files.get_mut(&id).expect("picked");
            file.references += 1;
            file.uploader_expires_at = None;
        }
        self.check_if(fault.is_some());
    }

    fn release_reference(&mut self, fault: Option<JournalFault>) {
        let Some(id) = self.pick_file(true) else { return };
        if let Some(fault) = fault {
            self.journal.inject(fault);
        }
        let result = block_on(self.shard.release_reference(id, TimestampMs(self.now)));
        let applied = match (result, fault) {
            (Ok(()), None) => true,
            (Err(_), Some(fault)) => {
                self.crash_and_reopen(0);
                fault == JournalFault::FailAfterSync
            }
            (result, fault) => panic!("seed {}: release_reference {result:?} with fault {fault:?}", self.seed),
        };
        if applied {
            let file = self.files.get_mut(&id).expect("picked");
            file.references -= 1;
            if file.references == 0 && file.uploader_expires_at.is_none() {
                self.files.remove(&id);
            }
        }
        self.check_if(fault.is_some());
    }

    fn tick(&mut self) {
        self.now += self.random(15_000);
        let report = block_on(self.shard.maintain(TimestampMs(self.now))).expect("maintain");
        let now = self.now;
        let before = self.files.len();
        self.files.retain(|_, file| file.references > 0 || file.uploader_expires_at.is_some_and(|at| at > now));
        for file in self.files.values_mut() {
            if file.uploader_expires_at.is_some_and(|at| at <= now) {
                file.uploader_expires_at = None;
            }
        }
        assert!(report.uploader_references_expired >= before - self.files.len(), "seed {}", self.seed);
        // Uploads idle past their timeout are gone.
        let live = self.uploads.len();
        self.uploads.retain(|upload| upload.last_activity + 30_000 > now);
        assert_eq!(live - self.uploads.len(), report.uploads_expired, "seed {}", self.seed);
    }

    fn crash_and_reopen(&mut self, torn_bytes: usize) {
        let shard = std::mem::replace(&mut self.shard, fresh(model_config()).0);
        drop(shard);
        self.disk.crash(torn_bytes);
        self.journal.crash();
        self.shard = open(model_config(), &self.disk, &self.journal);
        self.uploads.clear();
    }

    fn check_if(&mut self, condition: bool) {
        if condition {
            self.check();
        }
    }

    /// The store matches the model exactly, and its bookkeeping is sound.
    fn check(&mut self) {
        self.count("checks");
        *self.counts.entry("files checked").or_default() += self.files.len();
        let seed = self.seed;
        assert_eq!(self.shard.state().files().count(), self.files.len(), "seed {seed}: files differ from the model");
        for (id, model) in self.files.clone() {
            let info = self
                .shard
                .file_info(id, model.access_hash)
                .unwrap_or_else(|error| panic!("seed {seed}: {id}: {error}"));
            assert_eq!(info.references, model.references, "seed {seed}: {id}");
            assert_eq!(info.uploader_reference_held, model.uploader_expires_at.is_some(), "seed {seed}: {id}");
            let finished = FinishedFile {
                file: id,
                access_hash: model.access_hash,
                size: info.size,
                content_hash: info.content_hash,
            };
            assert!(download(&mut self.shard, &finished) == model.bytes, "seed {seed}: {id} reads back wrong");
        }
        let sweep = block_on(self.shard.sweep(TimestampMs(self.now))).expect("sweep");
        assert_eq!((sweep.refcounts_repaired, sweep.chunks_missing), (0, 0), "seed {seed}: {sweep:?}");
        let logical: u64 = self.files.values().map(|file| file.bytes.len() as u64).sum();
        assert_eq!(self.shard.stats().logical_bytes, logical, "seed {seed}");
    }

    fn step(&mut self) {
        let faults = [None, None, Some(JournalFault::FailBeforeSync), Some(JournalFault::FailAfterSync)];
        let fault = faults[self.random(4) as usize];
        match self.random(40) {
            0..=4 => self.start_upload(),
            5..=16 => self.send_parts(),
            17..=20 => self.finish(None),
            21..=23 => self.finish(fault),
            24..=27 => self.take_reference(fault),
            28..=30 => self.release_reference(fault),
            31..=33 => self.tick(),
            34..=35 => {
                let report = block_on(self.shard.compact(TimestampMs(self.now))).expect("compact");
                if report.segments_retired > 0 {
                    self.count("compactions that retired segments");
                }
            }
            36 => self.check(),
            _ => {
                let torn = self.random(6000) as usize;
                self.count("plain crashes");
                if !self.uploads.is_empty() {
                    self.count("crashes with uploads in flight");
                }
                self.crash_and_reopen(torn);
                self.check();
            }
        }
    }
}

#[test]
fn crashes_lose_no_finished_file() {
    let seeds: u64 = std::env::var("MEDIASTORE_MODEL_SEEDS").ok().and_then(|value| value.parse().ok()).unwrap_or(20);
    let mut totals: BTreeMap<&'static str, usize> = BTreeMap::new();
    for seed in 0..seeds {
        let disk = MemorySegments::new();
        let journal = MemoryJournal::new();
        let shard = open(model_config(), &disk, &journal);
        let mut run = Run {
            seed,
            rng: seed ^ 0xC0FF_EE00,
            now: 1_000,
            disk,
            journal,
            shard,
            files: BTreeMap::new(),
            uploads: Vec::new(),
            contents: Vec::new(),
            counts: BTreeMap::new(),
        };
        for _ in 0..STEPS {
            run.step();
        }
        run.crash_and_reopen(0);
        run.check();
        // Drop every reference, let every uploader reference expire, and compact after the
        // grace period: nothing may remain, including whatever crashes orphaned.
        for (id, file) in run.files.clone() {
            for _ in 0..file.references {
                block_on(run.shard.release_reference(id, TimestampMs(run.now))).expect("release");
            }
        }
        run.now += TTL_MS;
        block_on(run.shard.maintain(TimestampMs(run.now))).expect("maintain");
        block_on(run.shard.compact(TimestampMs(run.now + GRACE_MS))).expect("compact");
        let stats = run.shard.stats();
        assert_eq!(
            (stats.files, stats.chunks, stats.chunks_unreferenced, stats.physical_bytes),
            (0, 0, 0, 0),
            "seed {seed}: space left behind: {stats:?}"
        );
        assert_eq!(run.disk.total_bytes(), 0, "seed {seed}");
        for (what, count) in run.counts {
            *totals.entry(what).or_default() += count;
        }
    }
    println!("{seeds} seeds: {totals:?}");
    // A model test that never reached its interesting states proves nothing.
    if seeds >= 20 {
        for what in [
            "finished",
            "finish crashed at a sync",
            "plain crashes",
            "crashes with uploads in flight",
            "compactions that retired segments",
        ] {
            assert!(totals.get(what).copied().unwrap_or(0) > 0, "the runs never had {what}: {totals:?}");
        }
    }
}
