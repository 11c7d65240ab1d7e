//! Proves a checkpoint streamed into its file in parts of every size (from one byte to more
//! than a sync round, across write-buffer boundaries) reads back byte for byte with its
//! header after a restart; and that a producer giving up midway, after megabytes were
//! written, leaves no file behind, neither the temporary one nor a checkpoint, and the
//! previous checkpoint in place for the next open.

use std::path::Path;
use std::time::Duration;

use ferrogram_engine::config::{CHECKPOINT_SYNC_EVERY_BYTES, PREWRITE_CHUNK_BYTES};
use ferrogram_engine::wal::driver::{CheckpointError, ShardLog};
use ferrogram_engine::wal::CheckpointTicket;
use ferrogram_engine::{LogConfig, RecordKind, VShard};

const MARKER: RecordKind = RecordKind(0xF00D);

fn pseudo_random(length: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..length)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Part sizes that cross the write buffers at every kind of offset.
fn part_sizes(total: usize) -> Vec<usize> {
    let pattern = [1, 7, 4095, 4096, 4097, PREWRITE_CHUNK_BYTES - 3, PREWRITE_CHUNK_BYTES, 65_537, 0, 3 << 20];
    let mut sizes = Vec::new();
    let mut left = total;
    for &size in pattern.iter().cycle() {
        if left == 0 {
            break;
        }
        sizes.push(size.min(left));
        left -= size.min(left);
    }
    sizes
}

/// Opens the log in `dir`, hands `run` the log and the checkpoint state it restored, and
/// closes it, on a glommio executor of its own thread.
fn with_log<T: Send + 'static>(
    dir: &Path,
    run: impl AsyncFnOnce(&ShardLog, Option<(CheckpointTicket, Vec<u8>)>) -> T + Send + 'static,
) -> T {
    let dir = dir.to_path_buf();
    let worker = std::thread::spawn(move || {
        let executor = glommio::LocalExecutorBuilder::default().make().expect("executor");
        executor.run(async move {
            ferrogram_engine::preflight::probe_dma_reads(&dir).await.expect("DMA reads work");
            let mut restored = None;
            let (log, _) = ShardLog::open(
                &dir,
                LogConfig::default(),
                false,
                |checkpoint| {
                    restored = checkpoint.map(|(ticket, state)| (ticket, state.to_vec()));
                    Vec::new()
                },
                |_, _| {},
            )
            .await
            .expect("the log opens");
            let result = run(&log, restored).await;
            log.close().await.expect("the log closes");
            result
        })
    });
    worker.join().expect("the executor thread")
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .expect("the checkpoint directory")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_state_streamed_in_parts_reads_back_and_a_given_up_one_leaves_nothing() {
    let dir = std::env::temp_dir().join(format!("ferrogram-checkpoint-streamed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let state = pseudo_random(2 * CHECKPOINT_SYNC_EVERY_BYTES + 12_345, 5);

    let written = state.clone();
    let (ticket, abandoned) = with_log(&dir, async move |log, restored| {
        assert!(restored.is_none(), "a new log has no checkpoint");
        let appended = log.append(MARKER, VShard::of(0), b"marker").expect("append");
        log.durable(appended.lsn).await.expect("durable");
        let ticket = log
            .checkpoint_with(move |mut sink| async move {
                let mut at = 0;
                for size in part_sizes(written.len()) {
                    sink.write(&written[at..at + size]).await?;
                    at += size;
                    glommio::timer::sleep(Duration::from_micros(10)).await;
                }
                assert_eq!(sink.state_bytes(), written.len() as u64);
                Ok(sink)
            })
            .await
            .expect("the streamed checkpoint is written");
        // A checkpoint of a later LSN: megabytes written, then the producer gives up.
        let appended = log.append(MARKER, VShard::of(0), b"after").expect("append");
        log.durable(appended.lsn).await.expect("durable");
        let abandoned = log
            .checkpoint_with(|mut sink| async move {
                sink.write(&pseudo_random(3 << 20, 9)).await?;
                Err(CheckpointError::Abandoned)
            })
            .await;
        (ticket, abandoned)
    });
    assert!(matches!(abandoned, Err(CheckpointError::Abandoned)), "{abandoned:?}");
    let files = files_in(&dir);
    assert_eq!(files, vec![ferrogram_engine::wal::checkpoint::file_name(ticket.lsn)], "only the written checkpoint");

    let restored = with_log(&dir, async |_, restored| restored);
    let (found, bytes) = restored.expect("the open restores the checkpoint");
    assert_eq!(found, ticket);
    assert!(bytes == state, "the state came back changed ({} bytes of {})", bytes.len(), state.len());
    let _ = std::fs::remove_dir_all(&dir);
}
