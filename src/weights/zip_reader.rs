//! A zip archive's central directory, read from bytes (PKWARE's APPNOTE.TXT, sections 4.3 and 4.5),
//! with Zip64 sizes and offsets: what `torch.save` files need, no more. Entries are handed out as
//! slices of the input; decompression is not supported (torch.save stores its entries), so the
//! caller checks `method` and refuses compressed entries by name.
//!
//! Every count, size and offset the file claims is checked against the file's length before it is
//! used or allocated for.

/// One entry of the central directory.
#[derive(Debug)]
pub struct Entry<'a> {
    pub name: &'a [u8],
    /// 0: stored; anything else is compressed.
    pub method: u16,
    pub crc32: u32,
    pub compressed_size: u64,
    pub size: u64,
    /// Where the entry's local header starts.
    pub header_start: u64,
}

impl Entry<'_> {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(self.name).into_owned()
    }
}

const END_OF_DIRECTORY: u32 = 0x0605_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const ZIP64_END_OF_DIRECTORY: u32 = 0x0606_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const LOCAL_HEADER: u32 = 0x0403_4b50;
/// The fixed parts of the records above, in bytes.
const END_LEN: usize = 22;
const LOCATOR_LEN: usize = 20;
const ZIP64_END_LEN: usize = 56;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// The central directory's entries, in order; at most `max_entries` (checked before allocating).
pub fn entries(bytes: &[u8], max_entries: usize) -> Result<Vec<Entry<'_>>, String> {
    let (count, mut at, dir_end) = directory(bytes)?;
    if count > max_entries as u64 {
        return Err(format!("the zip archive has {count} entries, more than the {max_entries} a torch.save file can plausibly have: the file is corrupt"));
    }
    // Each central header takes at least 46 bytes of the directory: a count beyond that is a lie.
    if count.saturating_mul(CENTRAL_LEN as u64) > (dir_end - at) as u64 {
        return Err(format!("the zip directory claims {count} entries but holds at most {}: the file is truncated or corrupt", (dir_end - at) / CENTRAL_LEN));
    }
    let mut list = Vec::with_capacity(count as usize);
    for i in 0..count {
        let (entry, next) = central_header(&bytes[..dir_end], at).ok_or_else(|| format!("zip entry #{i}'s directory record is cut short or malformed: the file is truncated or corrupt"))?;
        list.push(entry);
        at = next;
    }
    Ok(list)
}

/// (entry count, directory start, directory end) from the end-of-directory records.
fn directory(bytes: &[u8]) -> Result<(u64, usize, usize), String> {
    let truncated = || "not a readable zip archive (no end-of-directory record): the file is truncated or corrupt".to_string();
    // The record is the last thing in the file but for a comment of at most 65535 bytes.
    let last = bytes.len().checked_sub(END_LEN).ok_or_else(truncated)?;
    let end = (last.saturating_sub(0xffff)..=last).rev().find(|&i| u32_at(bytes, i) == Some(END_OF_DIRECTORY)).ok_or_else(truncated)?;
    let (mut count, mut size, mut start) = (u16_at(bytes, end + 10).unwrap_or(0) as u64, u32_at(bytes, end + 12).unwrap_or(0) as u64, u32_at(bytes, end + 16).unwrap_or(0) as u64);
    // Zip64: a locator just before the record points to the 64-bit record, which holds the real values.
    if let Some(locator) = end.checked_sub(LOCATOR_LEN).filter(|&l| u32_at(bytes, l) == Some(ZIP64_LOCATOR)) {
        let bad = || "the zip archive's Zip64 end-of-directory record is missing or cut short: the file is truncated or corrupt".to_string();
        let at = u64_at(bytes, locator + 8).and_then(|a| usize::try_from(a).ok()).filter(|&a| a.checked_add(ZIP64_END_LEN).is_some_and(|e| e <= locator)).ok_or_else(bad)?;
        if u32_at(bytes, at) != Some(ZIP64_END_OF_DIRECTORY) {
            return Err(bad());
        }
        (count, size, start) = (u64_at(bytes, at + 32).ok_or_else(bad)?, u64_at(bytes, at + 40).ok_or_else(bad)?, u64_at(bytes, at + 48).ok_or_else(bad)?);
    }
    let dir_end = start
        .checked_add(size)
        .filter(|&e| e <= bytes.len() as u64)
        .ok_or_else(|| format!("the zip directory claims {size} bytes from byte {start} but the file is only {} bytes long: it is truncated or corrupt", bytes.len()))?;
    Ok((count, start as usize, dir_end as usize))
}

/// The central header at `at` and where the next one starts; `None` if it does not fit in `dir`.
fn central_header(dir: &[u8], at: usize) -> Option<(Entry<'_>, usize)> {
    if u32_at(dir, at)? != CENTRAL_HEADER {
        return None;
    }
    let (name_len, extra_len, comment_len) = (u16_at(dir, at + 28)? as usize, u16_at(dir, at + 30)? as usize, u16_at(dir, at + 32)? as usize);
    let name_at = at + CENTRAL_LEN;
    let extra_at = name_at + name_len;
    let next = extra_at + extra_len + comment_len;
    if next > dir.len() {
        return None;
    }
    let mut entry = Entry {
        name: &dir[name_at..extra_at],
        method: u16_at(dir, at + 10)?,
        crc32: u32_at(dir, at + 16)?,
        compressed_size: u32_at(dir, at + 20)? as u64,
        size: u32_at(dir, at + 24)? as u64,
        header_start: u32_at(dir, at + 42)? as u64,
    };
    apply_zip64(&mut entry, &dir[extra_at..extra_at + extra_len])?;
    Some((entry, next))
}

/// Replaces the 32-bit fields that say 0xFFFFFFFF with the Zip64 extra field's 64-bit values
/// (which hold only those, in the order size, compressed size, header offset).
fn apply_zip64(entry: &mut Entry<'_>, mut extra: &[u8]) -> Option<()> {
    while extra.len() >= 4 {
        let (id, len) = (u16_at(extra, 0)?, u16_at(extra, 2)? as usize);
        let data = extra.get(4..4 + len)?;
        if id == 1 {
            let mut values = data.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
            for field in [&mut entry.size, &mut entry.compressed_size, &mut entry.header_start] {
                if *field == 0xffff_ffff {
                    *field = values.next()?;
                }
            }
        }
        extra = &extra[4 + len..];
    }
    Some(())
}

/// Where an entry's data starts: after its local header, whose name and extra field (torch pads
/// the data to 64 bytes there) may differ in length from the central header's.
pub fn data_start(bytes: &[u8], entry: &Entry<'_>) -> Option<u64> {
    let at = usize::try_from(entry.header_start).ok()?;
    if u32_at(bytes, at)? != LOCAL_HEADER {
        return None;
    }
    let (name_len, extra_len) = (u16_at(bytes, at + 26)? as u64, u16_at(bytes, at + 28)? as u64);
    Some(entry.header_start + LOCAL_LEN as u64 + name_len + extra_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored archive of one entry, written by hand per APPNOTE, with `zip64` sizes if asked.
    fn archive(name: &[u8], data: &[u8], zip64: bool) -> Vec<u8> {
        let crc = crc32fast::hash(data);
        let mut out = Vec::new();
        out.extend_from_slice(&LOCAL_HEADER.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&3u16.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(b"pad");
        out.extend_from_slice(data);
        let dir_start = out.len();
        out.extend_from_slice(&CENTRAL_HEADER.to_le_bytes());
        out.extend_from_slice(&[20, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crc.to_le_bytes());
        let small = if zip64 { 0xffff_ffffu32 } else { data.len() as u32 };
        out.extend_from_slice(&small.to_le_bytes());
        out.extend_from_slice(&small.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&(if zip64 { 28u16 } else { 0 }).to_le_bytes());
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(&(if zip64 { 0xffff_ffffu32 } else { 0 }).to_le_bytes());
        out.extend_from_slice(name);
        if zip64 {
            out.extend_from_slice(&[1, 0, 24, 0]);
            for v in [data.len() as u64, data.len() as u64, 0] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let dir_len = out.len() - dir_start;
        if zip64 {
            let record = out.len();
            out.extend_from_slice(&ZIP64_END_OF_DIRECTORY.to_le_bytes());
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            for v in [1u64, 1, dir_len as u64, dir_start as u64] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&ZIP64_LOCATOR.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(record as u64).to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        out.extend_from_slice(&END_OF_DIRECTORY.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
        out.extend_from_slice(&(dir_len as u32).to_le_bytes());
        out.extend_from_slice(&(if zip64 { 0xffff_ffff } else { dir_start as u32 }).to_le_bytes());
        out.extend_from_slice(b"\x05\x00hello");
        out
    }

    #[test]
    fn reads_plain_and_zip64_archives_with_a_comment() {
        for zip64 in [false, true] {
            let bytes = archive(b"m/data/0", b"0123456789", zip64);
            let list = entries(&bytes, 10).unwrap();
            assert_eq!(list.len(), 1);
            let e = &list[0];
            assert_eq!((e.name, e.method, e.size, e.compressed_size, e.header_start), (&b"m/data/0"[..], 0, 10, 10, 0), "zip64: {zip64}");
            assert_eq!(e.crc32, crc32fast::hash(b"0123456789"));
            let start = data_start(&bytes, e).unwrap() as usize;
            assert_eq!(&bytes[start..start + 10], b"0123456789", "after the local header's own name and extra field");
        }
    }

    #[test]
    fn lying_counts_and_offsets_are_errors() {
        let good = archive(b"a", b"xyz", false);
        let end = good.len() - END_LEN - 5; // before the 5-byte comment
        let mut many = good.clone();
        many[end + 10..end + 12].copy_from_slice(&1000u16.to_le_bytes());
        assert!(entries(&many, 2000).unwrap_err().contains("claims 1000 entries"));
        assert!(entries(&many, 10).unwrap_err().contains("1000 entries, more than the 10"));
        let mut far = good.clone();
        far[end + 16..end + 20].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        assert!(entries(&far, 10).unwrap_err().contains("truncated or corrupt"));
        for n in 0..good.len() {
            let _ = entries(&good[..n], 10); // never panics on any prefix
        }
    }
}
