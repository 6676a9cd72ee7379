//! The NAR parser must never panic or allocate without bound, whatever the input.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use nixstore::nar::{Event, Node, Parser};

fuzz_target!(|data: &[u8]| {
    let mut parser = Parser::new(data);
    let mut buf = [0u8; 4096];
    while let Ok(Some(event)) = parser.next_event() {
        // Read some file contents, leave the rest for the parser to skip.
        if let Event::Node {
            node: Node::Regular { size, .. },
            ..
        } = event
        {
            if size % 2 == 0 {
                let _ = parser.contents().read(&mut buf);
            }
        }
    }
});
