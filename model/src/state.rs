//! The bytes a stateful guest exports its state as: little-endian numbers, counts checked
//! against the bytes left, every error a message (never a panic), so a corrupt or foreign state
//! is refused with why. Shared by the shipped aggregate and alert guests.

pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

/// A count or a length.
pub fn put_u32(out: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).expect("fewer than 2^32 entries");
    out.extend_from_slice(&n.to_le_bytes());
}

pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// `Err` when bytes are left after the state's end.
    pub fn finish(&self) -> Result<(), String> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            left => Err(format!("state has {left} bytes after its end")),
        }
    }

    /// `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.saturating_add(n);
        let chunk = self.bytes.get(self.at..end).ok_or_else(|| {
            format!(
                "state truncated at byte {} of {}: {n} more expected",
                self.at,
                self.bytes.len()
            )
        })?;
        self.at = end;
        Ok(chunk)
    }

    pub fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.bytes(N)?.try_into().expect("length checked"))
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }

    pub fn flag(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("state byte {} is {other}, not a flag", self.at - 1)),
        }
    }

    pub fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    pub fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_bits(self.u64()?))
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    /// A count of entries that each take at least `min_size` bytes: a corrupt count cannot ask
    /// for more room than the bytes left could fill.
    pub fn count(&mut self, min_size: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        let left = self.bytes.len() - self.at;
        if n.saturating_mul(min_size) > left {
            return Err(format!(
                "state counts {n} entries at byte {} but only {left} bytes follow",
                self.at - 4
            ));
        }
        Ok(n)
    }
}
