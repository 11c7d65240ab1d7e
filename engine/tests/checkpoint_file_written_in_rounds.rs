// Proves a checkpoint file larger than several sync rounds, written with a few writes in
// flight at once and a last write that is not whole, reads back byte for byte: the host state
// of 20 MiB and 1,234 bytes comes back from the checkpoint after a restart, with each depth of
// writes in flight the log allows, and a depth outside them is refused at open.

mod media_support;

use ferrogram_engine::config::CHECKPOINT_WRITES_IN_FLIGHT_MAX;
use ferrogram_engine::{EngineError, RecordKind, ShardId, VShard};
use media_support::*;

const MARKER: RecordKind = RecordKind(0xF00D);

#[test]
fn a_large_checkpoint_written_in_rounds_reads_back_whole() {
    let state = pseudo_random((20 << 20) + 1234, 77);
    for in_flight in [1, 3, CHECKPOINT_WRITES_IN_FLIGHT_MAX] {
        let dir = temp_dir("checkpoint-rounds");
        let mut settings = config(&dir, 1);
        settings.log.checkpoint_writes_in_flight = in_flight;
        let engine = open(settings.clone());
        let marker = block_on(engine.append(VShard::of(0), MARKER, b"marker".to_vec())).expect("append");
        let ticket = block_on(engine.checkpoint(ShardId(0), state.clone(), marker.first_lsn)).expect("checkpoint");
        engine.shutdown().expect("shutdown");
        drop(engine);

        let engine = open(settings);
        let (used, host) = engine.open_reports()[0].checkpoint.as_ref().expect("the checkpoint was used");
        assert_eq!(used.lsn, ticket.lsn, "{in_flight} in flight");
        assert!(*host == state, "{in_flight} in flight: the host state came back changed ({} bytes)", host.len());
        engine.shutdown().expect("shutdown");
        drop(engine);
        let _ = std::fs::remove_dir_all(&dir);
    }

    let dir = temp_dir("checkpoint-rounds-refused");
    for in_flight in [0, CHECKPOINT_WRITES_IN_FLIGHT_MAX + 1] {
        let mut settings = config(&dir, 1);
        settings.log.checkpoint_writes_in_flight = in_flight;
        let refused = ferrogram_engine::Engine::open(settings);
        assert!(matches!(refused, Err(EngineError::InvalidArgument(_))), "{in_flight} in flight: {:?}", refused.err());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
