//! A small, defensive reader of Python pickles: the subset of protocol 2 that
//! `torch.save` writes for a state dict (globals, reduces, persistent ids, tuples, lists, dicts,
//! numbers and strings). It builds values and never runs anything: a global is only a name.
//!
//! candle's own pickle reader serves the zip format; the legacy format starts with a pickled
//! 80-bit magic number, which it cannot hold.

use std::io::Read;

/// A value rebuilt from a pickle.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// A longer integer, as its little-endian two's-complement bytes.
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A global `module.name`, never imported.
    Global { module: String, name: String },
    /// `callable(*args)` (REDUCE and NEWOBJ), kept unevaluated.
    Call {
        callable: Box<Value>,
        args: Box<Value>,
    },
    /// `obj.__setstate__(state)` (BUILD), kept unevaluated.
    Build { obj: Box<Value>, state: Box<Value> },
    /// A persistent id (how torch refers to tensor storages).
    PersistentId(Box<Value>),
}

impl Value {
    /// Whether this is the global `module.name`.
    pub fn is_global(&self, module: &str, name: &str) -> bool {
        matches!(self, Value::Global { module: m, name: n } if m == module && n == name)
    }

    /// The items of a tuple or list.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// The text, if this is a string (text or bytes).
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// Limits that keep a hostile file from exhausting memory.
const MAX_STACK: usize = 1 << 20;
const MAX_STRING: usize = 1 << 24;

/// Reads one pickle (up to and including its STOP) from `r` and returns its value.
///
/// # Errors
/// A message naming the opcode or the structure that is wrong; the caller adds the file.
pub fn read_pickle(r: &mut impl Read) -> std::result::Result<Value, String> {
    Machine::default().run(r)
}

#[derive(Default)]
struct Machine {
    stack: Vec<Value>,
    /// Positions in `stack` where a MARK was pushed.
    marks: Vec<usize>,
    memo: std::collections::HashMap<u32, Value>,
}

fn byte(r: &mut impl Read) -> std::result::Result<u8, String> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)
        .map_err(|_| "the pickle ends early".to_string())?;
    Ok(b[0])
}

fn bytes<const N: usize>(r: &mut impl Read) -> std::result::Result<[u8; N], String> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)
        .map_err(|_| "the pickle ends early".to_string())?;
    Ok(b)
}

fn blob(r: &mut impl Read, len: usize) -> std::result::Result<Vec<u8>, String> {
    if len > MAX_STRING {
        return Err(format!(
            "a string of {len} bytes is too long for a state dict"
        ));
    }
    let mut b = vec![0u8; len];
    r.read_exact(&mut b)
        .map_err(|_| "the pickle ends early".to_string())?;
    Ok(b)
}

fn line(r: &mut impl Read) -> std::result::Result<String, String> {
    let mut out = Vec::new();
    loop {
        match byte(r)? {
            b'\n' => break,
            b => out.push(b),
        }
        if out.len() > 1024 {
            return Err("a global's name is longer than 1024 bytes".into());
        }
    }
    String::from_utf8(out).map_err(|_| "a global's name is not UTF-8".into())
}

fn utf8(b: Vec<u8>) -> std::result::Result<Value, String> {
    String::from_utf8(b)
        .map(Value::Str)
        .map_err(|_| "a string is not UTF-8".into())
}

/// The little-endian two's-complement integer of LONG1, as i64 when it fits.
fn long(b: Vec<u8>) -> Value {
    if b.len() > 8 {
        return Value::BigInt(b);
    }
    if b.is_empty() {
        return Value::Int(0);
    }
    let negative = b[b.len() - 1] & 0x80 != 0;
    let mut full = [if negative { 0xff } else { 0 }; 8];
    full[..b.len()].copy_from_slice(&b);
    Value::Int(i64::from_le_bytes(full))
}

impl Machine {
    fn run(mut self, r: &mut impl Read) -> std::result::Result<Value, String> {
        loop {
            let op = byte(r)?;
            if op == b'.' {
                return match (self.stack.pop(), self.stack.is_empty()) {
                    (Some(v), true) => Ok(v),
                    _ => Err("the pickle does not end with exactly one value".into()),
                };
            }
            self.step(op, r)?;
            if self.stack.len() > MAX_STACK {
                return Err("the pickle's stack grows past a million values".into());
            }
        }
    }

    fn pop(&mut self) -> std::result::Result<Value, String> {
        if self.marks.last() == Some(&self.stack.len()) {
            return Err("a value is taken from below a MARK".into());
        }
        self.stack
            .pop()
            .ok_or_else(|| "the pickle pops an empty stack".into())
    }

    fn pop_mark(&mut self) -> std::result::Result<Vec<Value>, String> {
        let at = self
            .marks
            .pop()
            .ok_or("the pickle closes a MARK it never opened")?;
        Ok(self.stack.split_off(at))
    }

    fn top(&mut self) -> std::result::Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "the pickle reads an empty stack".into())
    }

    fn get(&self, id: u32) -> std::result::Result<Value, String> {
        self.memo
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("the pickle refers to memo entry {id}, never stored"))
    }

    fn put(&mut self, id: u32) -> std::result::Result<(), String> {
        let v = self.top()?.clone();
        self.memo.insert(id, v);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> std::result::Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err("SETITEMS with an odd number of values".into());
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        match self.top()? {
            Value::Dict(d) => d.extend(pairs),
            _ => return Err("SETITEMS on something that is not a dict".into()),
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> std::result::Result<(), String> {
        match self.top()? {
            Value::List(l) => {
                l.extend(items);
                Ok(())
            }
            _ => Err("APPEND on something that is not a list".into()),
        }
    }

    fn step(&mut self, op: u8, r: &mut impl Read) -> std::result::Result<(), String> {
        match op {
            0x80 => {
                let proto = byte(r)?;
                if proto > 2 {
                    return Err(format!(
                        "pickle protocol {proto} (only 2 and below are read)"
                    ));
                }
            }
            b'(' => self.marks.push(self.stack.len()),
            b'N' => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            b'K' => self.stack.push(Value::Int(byte(r)? as i64)),
            b'M' => self
                .stack
                .push(Value::Int(u16::from_le_bytes(bytes(r)?) as i64)),
            b'J' => self
                .stack
                .push(Value::Int(i32::from_le_bytes(bytes(r)?) as i64)),
            0x8a => {
                let n = byte(r)? as usize;
                let b = blob(r, n)?;
                self.stack.push(long(b));
            }
            b'G' => self.stack.push(Value::Float(f64::from_be_bytes(bytes(r)?))),
            b'X' => {
                let n = u32::from_le_bytes(bytes(r)?) as usize;
                let s = utf8(blob(r, n)?)?;
                self.stack.push(s);
            }
            b'T' => {
                let n = u32::from_le_bytes(bytes(r)?) as usize;
                let b = blob(r, n)?;
                self.stack.push(Value::Bytes(b));
            }
            b'U' => {
                let n = byte(r)? as usize;
                let b = blob(r, n)?;
                self.stack.push(Value::Bytes(b));
            }
            b')' => self.stack.push(Value::Tuple(Vec::new())),
            b']' => self.stack.push(Value::List(Vec::new())),
            b'}' => self.stack.push(Value::Dict(Vec::new())),
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Tuple(items));
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::List(items));
            }
            b'd' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::Dict(Vec::new()));
                self.set_items(items)?;
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.stack.push(Value::Tuple(items));
            }
            b'c' => {
                let module = line(r)?;
                let name = line(r)?;
                self.stack.push(Value::Global { module, name });
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                // An OrderedDict is `OrderedDict()` followed by SETITEMS: a dict keeps its order.
                if callable.is_global("collections", "OrderedDict") && args == Value::Tuple(vec![])
                {
                    self.stack.push(Value::Dict(Vec::new()));
                    return Ok(());
                }
                self.stack.push(Value::Call {
                    callable: Box::new(callable),
                    args: Box::new(args),
                });
            }
            b'b' => {
                let state = self.pop()?;
                let obj = self.pop()?;
                self.stack.push(Value::Build {
                    obj: Box::new(obj),
                    state: Box::new(state),
                });
            }
            b'Q' => {
                let id = self.pop()?;
                self.stack.push(Value::PersistentId(Box::new(id)));
            }
            b'q' => self.put(byte(r)? as u32)?,
            b'r' => self.put(u32::from_le_bytes(bytes(r)?))?,
            b'h' => {
                let v = self.get(byte(r)? as u32)?;
                self.stack.push(v);
            }
            b'j' => {
                let v = self.get(u32::from_le_bytes(bytes(r)?))?;
                self.stack.push(v);
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            b'a' => {
                let v = self.pop()?;
                self.append(vec![v])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.append(items)?;
            }
            b'0' => {
                self.pop()?;
            }
            other => {
                return Err(format!(
                    "pickle opcode 0x{other:02x} is not one a state dict uses"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by `pickle.dumps(x, protocol=2)` in CPython 3.11.
    #[test]
    fn reads_what_python_writes() {
        // (1, -2, 300, 70000, 'hé', None, True, [1.5], {'a': 2})
        let bytes: &[u8] = b"\x80\x02(K\x01J\xfe\xff\xff\xffM,\x01J\x70\x11\x01\x00X\x03\x00\x00\x00h\xc3\xa9q\x00N\x88]q\x01G?\xf8\x00\x00\x00\x00\x00\x00a}q\x02X\x01\x00\x00\x00aq\x03K\x02stq\x04.";
        let v = read_pickle(&mut &bytes[..]).unwrap();
        assert_eq!(
            v,
            Value::Tuple(vec![
                Value::Int(1),
                Value::Int(-2),
                Value::Int(300),
                Value::Int(70000),
                Value::Str("hé".into()),
                Value::None,
                Value::Bool(true),
                Value::List(vec![Value::Float(1.5)]),
                Value::Dict(vec![(Value::Str("a".into()), Value::Int(2))]),
            ])
        );
    }

    #[test]
    fn reads_torch_magic_number_as_a_big_integer() {
        // pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)
        let bytes: &[u8] = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.";
        let v = read_pickle(&mut &bytes[..]).unwrap();
        assert_eq!(
            v,
            Value::BigInt(vec![
                0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19
            ])
        );
        // pickle.dumps(-3, protocol=2) uses BININT; LONG1 of one byte 0xfd is -3 too.
        assert_eq!(long(vec![0xfd]), Value::Int(-3));
        assert_eq!(long(vec![0xe9, 0x03]), Value::Int(1001));
    }

    #[test]
    fn reads_an_ordered_dict_in_order() {
        // pickle.dumps(collections.OrderedDict([('a', 1), ('b', 2)]), protocol=2)
        let bytes: &[u8] = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00aq\x02K\x01X\x01\x00\x00\x00bq\x03K\x02u.";
        let v = read_pickle(&mut &bytes[..]).unwrap();
        assert_eq!(
            v,
            Value::Dict(vec![
                (Value::Str("a".into()), Value::Int(1)),
                (Value::Str("b".into()), Value::Int(2)),
            ])
        );
        // pickle.dumps(2**40, protocol=2)
        let bytes: &[u8] = b"\x80\x02\x8a\x06\x00\x00\x00\x00\x00\x01.";
        assert_eq!(read_pickle(&mut &bytes[..]).unwrap(), Value::Int(1 << 40));
    }

    #[test]
    fn truncated_and_hostile_pickles_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x80\x02(K\x01",
            b"\x80\x02t.",
            b"\x80\x02h\x05.",
            b"\x80\x02K\x01K\x02.",
            b"\x80\x05K\x01.",
            b"\x80\x02\xff.",
            b"\x80\x02X\xff\xff\xff\xff",
            b"\x80\x02(s.",
        ];
        for case in cases {
            assert!(read_pickle(&mut &case[..]).is_err(), "{case:?}");
        }
    }
}
