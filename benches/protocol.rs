//! Micro-benchmarks of the sans-io protocol layer: the per-frame costs that
//! every message pays. Run: `cargo bench --bench protocol`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wsloop::ws::frame::{opcode, write_frame, FrameHead, Role};
use wsloop::ws::handshake::{parse_request, HandshakeConfig};
use wsloop::ws::mask::{apply_mask, apply_mask_bytewise};
use wsloop::ws::utf8::Utf8Validator;
use wsloop::ws::{Config, Event, Session};

fn header_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("header_decode");
    for (name, len) in [("7bit", 64usize), ("16bit", 4096), ("64bit", 70_000)] {
        let mut frame = Vec::new();
        write_frame(&mut frame, true, opcode::BINARY, &vec![0u8; len], Some([1, 2, 3, 4]));
        g.bench_function(name, |b| {
            b.iter(|| {
                let h = FrameHead::decode(black_box(&frame)).unwrap().unwrap();
                h.check(Role::Server, 1 << 24).unwrap();
                h
            })
        });
    }
    g.finish();
}

fn unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for size in [64usize, 4096, 65536] {
        let mut buf = vec![0x5au8; size];
        let src = vec![0xa5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("word/{size}"), |b| b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4])));
        g.bench_function(format!("bytewise/{size}"), |b| {
            b.iter(|| apply_mask_bytewise(black_box(&mut buf), [1, 2, 3, 4]))
        });
        g.bench_function(format!("memcpy/{size}"), |b| b.iter(|| buf.copy_from_slice(black_box(&src))));
    }
    g.finish();
}

fn utf8(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    let ascii = "a".repeat(4096);
    let mixed = "κόσμε €uro 中文 ascii ".repeat(4096 / 32);
    for (name, text) in [("ascii_4k", ascii.as_bytes()), ("mixed_4k", mixed.as_bytes())] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(format!("whole/{name}"), |b| b.iter(|| std::str::from_utf8(black_box(text)).is_ok()));
        g.bench_function(format!("incremental_7_pieces/{name}"), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                let step = text.len() / 7 + 1;
                let last = text.len().div_ceil(step) - 1;
                for (i, p) in text.chunks(step).enumerate() {
                    v.feed(black_box(p), i == last).unwrap();
                }
            })
        });
    }
    g.finish();
}

fn handshake(c: &mut Criterion) {
    let req = b"GET /ws HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: k6/1.1.0 (https://k6.io/)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    let cfg = HandshakeConfig::default();
    c.bench_function("handshake/parse", |b| {
        b.iter(|| {
            let mut scanned = 0;
            parse_request(black_box(req), &mut scanned, &cfg).unwrap().unwrap().head_len
        })
    });
    let full = Config::default();
    let mut out = Vec::with_capacity(256);
    c.bench_function("handshake/parse_and_reply", |b| {
        b.iter(|| {
            let mut s = Session::server();
            let mut input = req.to_vec();
            let mut asm = Vec::new();
            out.clear();
            let decoded = s.decode(black_box(&mut input), &mut asm, &mut out, &full).unwrap();
            if let Some(Event::Upgrade(req)) = &decoded.event {
                s.accept(&mut out, req);
            }
            decoded.consumed
        })
    });
}

fn decode_message(c: &mut Criterion) {
    // One 64-byte masked text message through the whole session: header,
    // checks, unmask, UTF-8, event.
    let mut frame = Vec::new();
    write_frame(&mut frame, true, opcode::TEXT, &[b'x'; 64], Some([9, 8, 7, 6]));
    let cfg = Config::default();
    let mut s = Session::server();
    let mut hs = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n".to_vec();
    let (mut asm, mut out) = (Vec::new(), Vec::new());
    if let Some(Event::Upgrade(req)) = s.decode(&mut hs, &mut asm, &mut out, &cfg).unwrap().event {
        s.accept(&mut out, &req);
    }
    let mut buf = frame.clone();
    c.bench_function("session/decode_text_64", |b| {
        b.iter(|| {
            buf.copy_from_slice(&frame);
            s.decode(black_box(&mut buf), &mut asm, &mut out, &cfg).unwrap().consumed
        })
    });
}

/// A JSON chat message of about `len` bytes, like `wsloop load --payload chat`.
fn chat(len: usize) -> Vec<u8> {
    let words = ["the", "meeting", "moved", "to", "three", "bring", "notes", "and", "laptop", "thanks", "review"];
    let mut s = br#"{"type":"message","room":"team-3","user":"user-417","seq":417,"text":""#.to_vec();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while s.len() + 2 < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
        s.push(b' ');
    }
    s.truncate(len - 2);
    s.extend_from_slice(br#""}"#);
    s
}

/// permessage-deflate per message, shared terms (a fresh state per
/// message): what `--compression shared` adds to a send and a receive.
fn deflate(c: &mut Criterion) {
    use wsloop::ws::deflate::{Deflater, Inflater};
    let mut g = c.benchmark_group("deflate");
    for len in [200usize, 600, 2000] {
        let message = chat(len);
        g.throughput(Throughput::Bytes(len as u64));
        for (mem_level, level) in [(8u8, 1u8), (8, 3), (8, 6), (6, 3), (4, 1), (4, 3), (4, 6), (2, 3)] {
            let mut deflater = Deflater::new(15, mem_level, level, false);
            let mut out = Vec::with_capacity(4096);
            deflater.compress(&message, &mut out);
            eprintln!("deflate {len} B at mem_level {mem_level} level {level}: {} B", out.len());
            g.bench_function(format!("compress_{len}_mem{mem_level}_level{level}"), |b| {
                b.iter(|| {
                    out.clear();
                    deflater.compress(black_box(&message), &mut out);
                    out.len()
                })
            });
        }
        let mut compressed = Vec::new();
        Deflater::new(15, 8, 3, false).compress(&message, &mut compressed);
        let mut inflater = Inflater::new(15, false);
        let mut out = Vec::with_capacity(4096);
        g.bench_function(format!("inflate_{len}"), |b| {
            b.iter(|| {
                out.clear();
                inflater.decompress(black_box(&compressed), &mut out, 1 << 20).unwrap();
                out.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, header_decode, unmask, utf8, handshake, decode_message, deflate);
criterion_main!(benches);
