//! A row of embeddings as a pgvector `vector` parameter, without copying it.

use std::error::Error;

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// `&[f32]` in pgvector's binary form: dimension (u16), a zero u16, then big-endian floats,
/// as `pgvector::Vector` writes it but borrowed (a push writes millions of rows).
#[derive(Debug)]
pub struct VectorRef<'a>(pub &'a [f32]);

impl ToSql for VectorRef<'_> {
    fn to_sql(&self, _ty: &Type, w: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let dim: u16 = self.0.len().try_into()?;
        w.reserve(4 + 4 * self.0.len());
        w.extend_from_slice(&dim.to_be_bytes());
        w.extend_from_slice(&0u16.to_be_bytes());
        for v in self.0 {
            w.extend_from_slice(&v.to_be_bytes());
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        ty.name() == "vector"
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same bytes as the pgvector crate's own `Vector`.
    #[test]
    fn writes_what_pgvector_writes() {
        let row = [0.5f32, -1.25, 3.0e-7, 0.0];
        let ty = Type::new(
            "vector".into(),
            0,
            tokio_postgres::types::Kind::Simple,
            "public".into(),
        );
        let mut ours = BytesMut::new();
        VectorRef(&row).to_sql(&ty, &mut ours).unwrap();
        let mut theirs = BytesMut::new();
        pgvector::Vector::from(row.to_vec())
            .to_sql(&ty, &mut theirs)
            .unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(ours.len(), 4 + 4 * row.len());
    }
}
