//! Proves shards work together over glommio's channel mesh: a host service started on every
//! shard sends a task to its neighbour, the neighbour appends a record to its own log and
//! answers back across the mesh, and each service reports the answer it got.

use std::rc::Rc;
use std::sync::mpsc;

use ferrogram::engine::shard::{MeshTask, ShardContext};
use ferrogram::engine::{Engine, EngineConfig, Lsn, RecordKind, ShardId, VShard};

const KIND: RecordKind = RecordKind(3);

/// Proves each shard can have its neighbour append and answer over the mesh.
#[test]
fn every_shard_appends_for_its_neighbour() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ferrogram-mesh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = EngineConfig::new(&dir);
    config.shards = 2;
    config.log.segment_bytes = 4 << 20;
    let engine = Engine::open(config).expect("open");
    let (report, reports) = mpsc::channel::<(ShardId, ShardId, Lsn)>();
    engine
        .run_on_every_shard(move |context: Rc<ShardContext>| {
            let report = report.clone();
            async move {
                let me = context.id;
                let neighbour = ShardId(((me.0 as usize + 1) % context.shard_count()) as u16);
                let (answer, answers) = flume::bounded::<(ShardId, Lsn)>(1);
                let task: MeshTask = Box::new(move |there: &Rc<ShardContext>| {
                    let payload = format!("appended on behalf of {me}");
                    let appended = there.log.append(KIND, VShard::of(0), payload.as_bytes()).expect("append");
                    let there_id = there.id;
                    there.log.on_acked(
                        appended.lsn,
                        Box::new(move |result| {
                            result.expect("acknowledged");
                            let _ = answer.try_send((there_id, appended.lsn));
                        }),
                    );
                });
                assert!(context.send_to(neighbour, task).await.is_ok(), "the mesh accepts the task");
                let (answered_by, lsn) = answers.recv_async().await.expect("an answer");
                let _ = report.send((me, answered_by, lsn));
            }
        })
        .expect("start the services");
    let mut got: Vec<_> = (0..2).map(|_| reports.recv().expect("a report")).collect();
    got.sort();
    assert_eq!(
        got.iter().map(|(from, by, _)| (*from, *by)).collect::<Vec<_>>(),
        vec![(ShardId(0), ShardId(1)), (ShardId(1), ShardId(0))]
    );
    assert!(got.iter().all(|(_, _, lsn)| *lsn == Lsn::FIRST), "each neighbour's log took one record: {got:?}");
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
