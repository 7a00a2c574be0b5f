//! The linear file backend's container: any bytes as a header, then a sequence of
//! stores and deletes chosen by the input, carried out on an in-memory container. The
//! planner must never panic, and every plan must stay inside the container and keep
//! every other blob's bytes intact. The same input is also read as a redo record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtpm::state::journal;
use vtpm::state::linear::{HEADER_LEN, Header, Medium, Plan, SLOT_COUNT, plan_delete, plan_store};

fn apply(image: &mut Vec<u8>, plan: &Plan, data: &[u8]) {
    if let Some(moved) = &plan.moved {
        let from = moved.from.start as usize..moved.from.end as usize;
        assert!(from.end <= image.len(), "move source inside the container");
        image.copy_within(from, moved.to as usize);
    }
    if let Some(len) = plan.new_len {
        image.resize(len as usize, 0);
    }
    if let Some(at) = plan.data_at {
        image[at as usize..at as usize + data.len()].copy_from_slice(data);
    }
    image[..HEADER_LEN].copy_from_slice(&plan.header.encode());
}

fn blob(image: &[u8], header: &Header, n: usize) -> Option<Vec<u8>> {
    let slot = header.slots[n];
    slot.is_present()
        .then(|| image[slot.data().start as usize..slot.data().end as usize].to_vec())
}

fuzz_target!(|input: &[u8]| {
    if let Some(len) = journal::record_len(input) {
        if let Some(at) = input.len().checked_sub(len as usize) {
            if let Some(change) = journal::decode(&input[at..], at as u64) {
                assert!(change.end() <= at as u64, "writes stay before the record");
                assert_eq!(journal::decode(&change.encode(), u64::MAX), Some(change));
            }
        }
    }
    let (head, ops) = input.split_at(input.len().min(HEADER_LEN));
    let mut image = head.to_vec();
    image.resize(HEADER_LEN + 64, 0);
    let Ok(Some(mut header)) = Header::parse(&image, image.len() as u64) else {
        return;
    };
    let device = ops.first().is_some_and(|b| b & 1 == 1);
    for op in ops.chunks(3).take(64) {
        let n = op[0] as usize % SLOT_COUNT;
        let len = op.get(1).map_or(0, |b| usize::from(*b) * 37);
        let medium = match device {
            true => Medium::Device(image.len() as u64 + 4096),
            false => Medium::File,
        };
        let others: Vec<_> = (0..SLOT_COUNT).map(|m| blob(&image, &header, m)).collect();
        let container_len = match medium {
            Medium::Device(size) => size,
            Medium::File => image.len() as u64,
        };
        if let Medium::Device(size) = medium {
            image.resize(size as usize, 0);
        }
        let data = vec![op.get(2).copied().unwrap_or(0); len];
        let plan = if op[0] & 0x80 == 0 {
            match plan_store(&header, n, len, container_len, medium) {
                Ok(plan) => plan,
                Err(_) => continue,
            }
        } else {
            match plan_delete(&header, n, container_len, medium) {
                Some(plan) => plan,
                None => continue,
            }
        };
        apply(&mut image, &plan, &data);
        header = Header::parse(&image, image.len() as u64)
            .expect("a plan leaves a valid container")
            .expect("with its magic");
        for (m, before) in others.iter().enumerate() {
            if m != n {
                assert_eq!(&blob(&image, &header, m), before, "slot {m} kept");
            }
        }
        if op[0] & 0x80 == 0 {
            assert_eq!(blob(&image, &header, n), Some(data));
        }
    }
});
