//! LL-HLS playlist layer end to end: a timeline driven part by part must
//! produce playlists that pass every rule, survive a render/parse round trip,
//! and yield delta updates that rebuild the full playlist; the parser must
//! survive any damage to a real playlist.

use onair::hls::{
    MediaPlaylist, PartId, RenditionNames, RenditionReport, TimelineConfig, check, check_named,
};

const PART: u64 = 15_360;

/// What a client knows about each segment once tags are resolved: URI,
/// duration, parts, discontinuity, the init section in force and the date.
type Resolved = (
    String,
    u64,
    Vec<(String, u64)>,
    bool,
    Option<String>,
    Option<i64>,
);

/// Resolves every segment of a full playlist: the map in force and the date,
/// carried forward from the last dated segment when absent.
fn resolve(p: &MediaPlaylist) -> Vec<Resolved> {
    let mut map = None;
    let mut next_date: Option<i64> = None;
    let mut out = Vec::new();
    for s in &p.segments {
        if s.map.is_some() {
            map = s.map.as_ref().map(|m| m.uri.clone());
        }
        if s.discontinuity {
            next_date = None;
        }
        let date = s
            .program_date_time
            .map(|d| d.timestamp_millis())
            .or(next_date);
        out.push((
            s.uri.clone(),
            s.duration,
            s.parts
                .iter()
                .map(|x| (x.uri.clone(), x.duration))
                .collect(),
            s.discontinuity,
            map.clone(),
            date,
        ));
        // Durations here are whole milliseconds.
        next_date = date.map(|d| d + (s.duration / 48) as i64);
    }
    out
}

/// What a client does with a delta update (RFC 8216bis 6.2.5.1): keep the
/// skipped segments from the playlist it holds, take the rest from the delta.
fn apply_delta(held: &MediaPlaylist, delta: &MediaPlaylist) -> MediaPlaylist {
    let skipped = delta
        .skip
        .as_ref()
        .map_or(0, |s| s.skipped_segments as usize);
    let offset = usize::try_from(delta.media_sequence - held.media_sequence).expect("small");
    let mut merged = delta.clone();
    merged.skip = None;
    merged.segments = held.segments[offset..offset + skipped].to_vec();
    merged.segments.extend(delta.segments.iter().cloned());
    merged
}

fn assert_delta_rebuilds(full: &MediaPlaylist, delta: &MediaPlaylist, context: &str) {
    let rebuilt = apply_delta(full, delta);
    assert_eq!(resolve(&rebuilt), resolve(full), "{context}");
    // Everything but the segment tags is identical.
    let strip = |p: &MediaPlaylist| {
        let mut p = p.clone();
        p.segments.clear();
        p
    };
    assert_eq!(strip(&rebuilt), strip(full), "{context}");
    // The delta stands alone: its first segment names its init section and date.
    if delta.skip.is_some() {
        let first = delta.segments.first().expect("a delta keeps a segment");
        assert!(first.map.is_some(), "{context}");
        assert!(first.program_date_time.is_some(), "{context}");
    }
}

#[test]
fn a_live_broadcast_passes_every_rule_at_every_part() {
    let opus = onair::publish::layout::rendition_names().clone();
    let mut t = TimelineConfig {
        epoch_unix_ms: 1_764_300_000_000,
        first_msn: 42,
        ..TimelineConfig::default()
    }
    .build()
    .expect("valid config");
    let mut deltas = 0;
    // 10 minutes of 320 ms parts, with a short part (an early segment end)
    // now and then, as after an input gap.
    for i in 0..1875u32 {
        let duration = if i % 97 == 96 { 4_800 } else { PART };
        let id = t.push_part(duration).expect("part");
        let report = RenditionReport::at("../aac/live.m3u8", id);
        let p = t.media_playlist(&opus, &[report]);
        assert_eq!(check_named(&p, &opus), Vec::new(), "after part {i}");
        assert_eq!(
            MediaPlaylist::parse(&p.render()).as_ref(),
            Ok(&p),
            "part {i}"
        );
        let skip_until = p
            .server_control
            .and_then(|s| s.can_skip_until)
            .expect("skip boundary");
        for d in [p.delta(skip_until), p.delta_v2(skip_until)] {
            assert_eq!(check_named(&d, &opus), Vec::new(), "delta after part {i}");
            assert_eq!(MediaPlaylist::parse(&d.render()).as_ref(), Ok(&d));
            assert_delta_rebuilds(&p, &d, &format!("part {i}"));
            if d.skip.is_some() {
                deltas += 1;
            }
        }
        // Expired segments are never still listed.
        for gone in t.take_expired(t.head()) {
            assert!(gone.msn < p.media_sequence, "{gone:?} still listed");
        }
    }
    assert!(deltas > 3000, "only {deltas} deltas skipped anything");
    t.finish();
    let p = t.media_playlist(&opus, &[]);
    assert!(p.end_list && p.preload_hint.is_none());
    assert_eq!(check_named(&p, &opus), Vec::new());
}

#[test]
fn renditions_differ_only_in_names() {
    let mut t = TimelineConfig::default().build().expect("valid");
    for _ in 0..40 {
        t.push_part(PART).expect("part");
    }
    let aac = RenditionNames::new("aac-init.mp4", "a{msn}.m4s", "a{msn}-{part}.m4s").expect("ok");
    let opus = onair::publish::layout::rendition_names().clone();
    let last = t.last_part().expect("parts");
    assert_eq!(last, PartId { msn: 6, part: 3 });
    let a = t.media_playlist(&aac, &[RenditionReport::at("../opus/live.m3u8", last)]);
    let o = t.media_playlist(&opus, &[RenditionReport::at("../aac/live.m3u8", last)]);
    assert_eq!(check_named(&a, &aac), Vec::new());
    assert!(!check_named(&a, &opus).is_empty());
    let durations =
        |p: &MediaPlaylist| -> Vec<u64> { p.segments.iter().map(|s| s.duration).collect() };
    assert_eq!(durations(&a), durations(&o));
    assert_eq!(
        a.preload_hint.as_ref().map(|h| h.uri.as_str()),
        Some("a6-4.m4s")
    );
    assert!(
        a.render()
            .contains("#EXT-X-RENDITION-REPORT:URI=\"../opus/live.m3u8\",LAST-MSN=6,LAST-PART=3\n")
    );
}

/// Deterministic xorshift, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Parsing must not panic; what parses must render to text that parses, and
/// one render/parse cycle reaches a fixed point. Checks and deltas of any
/// parsed playlist must not panic either. Returns whether `text` parsed.
fn survive(text: &str) -> bool {
    let Ok(p) = MediaPlaylist::parse(text) else {
        return false;
    };
    let _ = check(&p);
    let _ = check_named(&p, onair::publish::layout::rendition_names());
    let _ = p.delta(u64::MAX).render();
    let _ = p.delta(12 * 48_000).render();
    let once = p.render();
    let again = MediaPlaylist::parse(&once)
        .unwrap_or_else(|e| panic!("rendered text fails to parse ({e}):\n{once}\nfrom:\n{text}"));
    assert_eq!(again.render(), once, "not a fixed point; from:\n{text}");
    true
}

#[test]
fn parser_survives_truncation_and_mutation() {
    let mut t = TimelineConfig {
        window: Some(10 * 6 * PART),
        start_discontinuity: true,
        ..TimelineConfig::default()
    }
    .build()
    .expect("valid");
    for _ in 0..80 {
        t.push_part(PART).expect("part");
    }
    let names = onair::publish::layout::rendition_names().clone();
    let p = t.media_playlist(
        &names,
        &[RenditionReport::at(
            "../aac/live.m3u8",
            PartId { msn: 8, part: 1 },
        )],
    );
    let text = p.render();
    let delta = p.delta_v2(12 * 48_000).render();
    assert!(delta.contains("#EXT-X-SKIP:"));

    for source in [&text, &delta] {
        // Every prefix, split at every character: those ending on a line
        // break without a dangling EXTINF parse.
        let parsed = source
            .char_indices()
            .filter(|(i, _)| survive(&source[..*i]))
            .count();
        assert!(parsed > 20, "only {parsed} prefixes parsed");
        assert!(survive(source));
    }

    let alphabet = b",=\":\n\r#.-0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ\t\x00\xff";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for round in 0..20_000 {
        let source = if round % 2 == 0 { &text } else { &delta };
        let mut bytes = source.as_bytes().to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            match rng.below(5) {
                0 => bytes[at] = alphabet[rng.below(alphabet.len())],
                1 => {
                    let end = (at + rng.below(40)).min(bytes.len());
                    bytes.drain(at..end);
                }
                2 => bytes.insert(at, alphabet[rng.below(alphabet.len())]),
                3 => {
                    // Duplicate a line.
                    let lines: Vec<&[u8]> = source.as_bytes().split(|b| *b == b'\n').collect();
                    let line = lines[rng.below(lines.len())].to_vec();
                    let at = at.min(bytes.len());
                    bytes.splice(at..at, line.into_iter().chain([b'\n']));
                }
                _ => {
                    // Swap two lines.
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    let mut lines: Vec<&str> = text.split('\n').collect();
                    let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                    lines.swap(a, b);
                    bytes = lines.join("\n").into_bytes();
                }
            }
            if bytes.is_empty() {
                break;
            }
        }
        parsed += usize::from(survive(&String::from_utf8_lossy(&bytes)));
    }
    // Many mutations (inside URIs, dates, digits) still parse, so the
    // render/parse fixed point is exercised, not just the error paths.
    assert!(parsed > 2_000, "only {parsed} mutations parsed");
}
