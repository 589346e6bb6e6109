//! A whole server session fed arbitrary bytes in pieces (the first byte sets
//! the piece size), accepting any publish: it must close exactly once, with
//! Closed as its last event. Seed the corpus with
//! fixtures/rtmp/ffmpeg-aac-publish.bin.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onair::ingest::rtmp::{Event, Session, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let piece = 1 + data.first().map_or(0, |&b| usize::from(b)) * 7;
    let mut session = Session::new(SessionConfig::default());
    let mut events = Vec::new();
    let drain = |session: &mut Session, events: &mut Vec<Event>| {
        while let Some(event) = session.poll_event() {
            if matches!(event, Event::PublishRequested { .. }) {
                let _ = session.accept();
            }
            events.push(event);
        }
        session.take_output();
    };
    for piece in data.chunks(piece) {
        let _ = session.feed(piece);
        drain(&mut session, &mut events);
    }
    session.peer_closed();
    drain(&mut session, &mut events);
    let closes = events
        .iter()
        .filter(|e| matches!(e, Event::Closed(_)))
        .count();
    assert_eq!(closes, 1);
    assert!(matches!(events.last(), Some(Event::Closed(_))));
});
