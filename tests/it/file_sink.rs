//! The file sink's rotation: every acknowledged event is in exactly one file, rotated files sort
//! by age, and only `keep_files` deletes anything.

use std::{collections::HashMap, path::Path};

use vodbridge_core::Envelope;

use crate::helpers::{settings, TestApp};

/// Every file of the sink (current and rotated), oldest first, with the subjects in it.
fn files(dir: &Path) -> Vec<(String, Vec<String>)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    // The current file last: rotated names sort by age and all sort before it.
    names.sort_by_key(|n| (n == "events.jsonl", n.clone()));
    names
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(&name)).expect("read");
            let subjects = text
                .lines()
                .map(|l| {
                    Envelope::from_structured_json(l.as_bytes())
                        .expect("a whole CloudEvent per line")
                        .subject
                        .unwrap_or_default()
                })
                .collect();
            (name, subjects)
        })
        .collect()
}

async fn post_events(app: &TestApp, range: std::ops::Range<usize>) {
    for i in range {
        let body = format!(
            r#"{{"EventType":"NewFileUpload","FileUploadEvent":{{"FileId":"{i}","MediaBasicInfo":{{"Name":"{}"}}}}}}"#,
            "x".repeat(400)
        );
        assert_eq!(app.post("/callback/default", body).await.status(), 200);
    }
}

fn config(dir: &Path, keep: Option<usize>) -> String {
    format!(
        "[sinks.file]\ntype = \"file\"\npath = {:?}\nrotate_bytes = 4096\n{}",
        dir.join("events.jsonl").display().to_string(),
        keep.map(|k| format!("keep_files = {k}\n"))
            .unwrap_or_default()
    )
}

#[tokio::test]
async fn rotation_keeps_every_acknowledged_event_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(settings(&config(dir.path(), None)), vec![]).await;
    post_events(&app, 0..60).await;
    app.stop().await.expect("clean stop");

    let files = files(dir.path());
    assert!(files.len() >= 4, "~1 KB events, 4 KB files: {files:?}");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (name, subjects) in &files {
        if name != "events.jsonl" {
            let rest = name.strip_prefix("events.jsonl.").expect("rotated name");
            assert_eq!(rest.len(), 23, "{name}: .YYYYMMDDTHHMMSSZ-NNNNNN");
        }
        for subject in subjects {
            *seen.entry(subject.clone()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 60, "every event is in some file");
    assert!(seen.values().all(|&n| n == 1), "and in only one");
    // Oldest first: the files hold the events in the order they were written.
    let order: Vec<usize> = files
        .iter()
        .flat_map(|(_, s)| s.iter().map(|s| s.parse::<usize>().expect("number")))
        .collect();
    assert_eq!(order, (0..60).collect::<Vec<_>>());

    // A restart appends to the current file and rotates on from there.
    let app = TestApp::start(settings(&config(dir.path(), None)), vec![]).await;
    post_events(&app, 60..70).await;
    app.stop().await.expect("clean stop");
    let total: usize = self::files(dir.path()).iter().map(|(_, s)| s.len()).sum();
    assert_eq!(total, 70);
}

#[tokio::test]
async fn keep_files_deletes_the_oldest_rotated_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::start(settings(&config(dir.path(), Some(1))), vec![]).await;
    post_events(&app, 0..60).await;
    app.stop().await.expect("clean stop");
    let files = files(dir.path());
    assert_eq!(
        files.len(),
        2,
        "one rotated file and the current one: {files:?}"
    );
    let newest: Vec<String> = files.iter().flat_map(|(_, s)| s.clone()).collect();
    assert_eq!(
        newest.last().map(String::as_str),
        Some("59"),
        "the newest events are kept"
    );
    assert!(
        !newest.contains(&"0".to_owned()),
        "the oldest went with their file"
    );
}
