//! The attribute's arguments: `key = literal` pairs, `group(...)` of further pairs, and
//! `config = "name or path"`, read into a TOML table with the tokens of every argument kept, so a
//! diagnostic about a key can point at the argument that set it.

use proc_macro2::{Delimiter, Group, Ident, TokenStream};
use quote::quote;
use syn::ext::IdentExt as _;
use syn::parse::{ParseStream, Parser as _};
use syn::{Lit, LitStr, Token};
use toml::{Table, Value};

/// The arguments as written.
#[derive(Default)]
pub struct Args {
    /// Every key except `config`, as a TOML table.
    pub table: Table,
    /// Dotted key → the tokens of the argument that set it (`block_size = 64`, or the
    /// whole `graphs(...)` group).
    pub spans: Vec<(String, TokenStream)>,
    /// `config = "..."`: the literal (a bundled layout's name or a file path) and the
    /// argument's tokens.
    pub config: Option<(LitStr, TokenStream)>,
}

impl Args {
    /// The tokens of the argument that set `key` or, failing that, the group enclosing it.
    pub fn tokens_for(&self, key: &str) -> Option<&TokenStream> {
        let mut k = key;
        loop {
            if let Some((_, t)) = self.spans.iter().find(|(name, _)| name == k) {
                return Some(t);
            }
            k = k.rsplit_once('.')?.0;
        }
    }
}

/// Parses the attribute's arguments.
pub fn parse(tokens: TokenStream) -> syn::Result<Args> {
    let mut args = Args::default();
    let parser = |input: ParseStream<'_>| {
        let mut table = Table::new();
        parse_level(input, "", &mut table, &mut args)?;
        args.table = table;
        Ok(())
    };
    parser.parse2(tokens)?;
    Ok(args)
}

fn parse_level(
    input: ParseStream<'_>,
    prefix: &str,
    table: &mut Table,
    args: &mut Args,
) -> syn::Result<()> {
    while !input.is_empty() {
        let key = input.call(Ident::parse_any)?;
        let name = key.unraw().to_string();
        let dotted = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let mut literal = None;
        let (value, tokens) = if input.peek(Token![=]) {
            let eq: Token![=] = input.parse()?;
            let (value, value_tokens, lit) = parse_value(input, &dotted)?;
            literal = lit;
            (value, quote!(#key #eq #value_tokens))
        } else if input.peek(syn::token::Paren) {
            let content;
            let paren = syn::parenthesized!(content in input);
            let mut sub = Table::new();
            parse_level(&content, &dotted, &mut sub, args)?;
            let mut group = Group::new(Delimiter::Parenthesis, TokenStream::new());
            group.set_span(paren.span.join());
            (Value::Table(sub), quote!(#key #group))
        } else {
            return Err(syn::Error::new(
                key.span(),
                format!("expected `{name} = value` or `{name}(...)`"),
            ));
        };
        if prefix.is_empty() && name == "config" {
            let (Value::String(_), Some(Lit::Str(lit))) = (&value, literal) else {
                return Err(syn::Error::new_spanned(
                    tokens,
                    "`config` takes a bundled layout's name or the path of a TOML layout file: `config = \"nemotron-h-8b\"`, `config = \"layouts/model.toml\"`",
                ));
            };
            if args.config.is_some() {
                return Err(syn::Error::new_spanned(tokens, "duplicate key `config`"));
            }
            args.config = Some((lit, tokens));
        } else {
            if table.contains_key(&name) {
                return Err(syn::Error::new_spanned(
                    tokens,
                    format!("duplicate key `{dotted}`"),
                ));
            }
            table.insert(name, value);
            args.spans.push((dotted, tokens));
        }
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(())
}

/// A literal value (`-` allowed before numbers) or a `[...]` list of values (a bucket
/// table: `buckets = [[256, 0, 256], [4096, 1, 255]]`), its tokens, and the literal when it
/// is one.
fn parse_value(
    input: ParseStream<'_>,
    key: &str,
) -> syn::Result<(Value, TokenStream, Option<Lit>)> {
    if input.peek(syn::token::Bracket) {
        let group: Group = input.parse()?;
        let items = |content: ParseStream<'_>| {
            let mut items = Vec::new();
            while !content.is_empty() {
                items.push(parse_value(content, key)?.0);
                if content.is_empty() {
                    break;
                }
                content.parse::<Token![,]>()?;
            }
            Ok(items)
        };
        let items = items.parse2(group.stream())?;
        return Ok((Value::Array(items), quote!(#group), None));
    }
    let minus: Option<Token![-]> = input.parse()?;
    let lit: Lit = input.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("expected a literal value for `{key}`: a string, integer, number or bool"),
        )
    })?;
    let sign: i32 = if minus.is_some() { -1 } else { 1 };
    let value = match (&lit, minus.is_some()) {
        (Lit::Int(i), _) => Value::Integer(i64::from(sign) * i.base10_parse::<i64>()?),
        (Lit::Float(f), _) => Value::Float(f64::from(sign) * f.base10_parse::<f64>()?),
        (Lit::Str(s), false) => Value::String(s.value()),
        (Lit::Bool(b), false) => Value::Boolean(b.value),
        _ => {
            return Err(syn::Error::new_spanned(
                quote!(#minus #lit),
                format!("expected a string, integer, number or bool for `{key}`"),
            ));
        }
    };
    Ok((value, quote!(#minus #lit), Some(lit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_groups_and_config() {
        let a = parse(quote!(
            config = "layouts/x.toml",
            max_tokens = 64,
            graphs(count = -1, distribution = "linear", non_decode = false),
            memory(budget_gib = 1.5),
        ))
        .unwrap();
        assert_eq!(a.config.as_ref().unwrap().0.value(), "layouts/x.toml");
        assert_eq!(a.table["max_tokens"], Value::Integer(64));
        let g = a.table["graphs"].as_table().unwrap();
        assert_eq!(g["count"], Value::Integer(-1));
        assert_eq!(g["non_decode"], Value::Boolean(false));
        assert_eq!(a.table["memory"]["budget_gib"], Value::Float(1.5));
        assert_eq!(
            a.tokens_for("graphs.count").unwrap().to_string(),
            "count = - 1"
        );
        assert!(
            a.tokens_for("graphs.token_budget")
                .unwrap()
                .to_string()
                .starts_with("graphs")
        );
        assert!(a.tokens_for("model").is_none());
    }

    #[test]
    fn lists_are_toml_arrays() {
        let a = parse(quote!(graphs(buckets = [[256, 0, 256], [4096, 1, 255],]))).unwrap();
        let g = a.table["graphs"].as_table().unwrap();
        let want: Value = "b = [[256, 0, 256], [4096, 1, 255]]"
            .parse::<Table>()
            .unwrap()
            .remove("b")
            .unwrap();
        assert_eq!(g["buckets"], want);
        assert!(
            a.tokens_for("graphs.buckets")
                .unwrap()
                .to_string()
                .starts_with("buckets = [")
        );
        assert_eq!(
            parse(quote!(x = [])).unwrap().table["x"],
            Value::Array(Vec::new())
        );
        let e = parse(quote!(x = [1 2])).err().unwrap().to_string();
        assert!(e.contains("expected `,`"), "{e}");
    }

    #[test]
    fn syntax_errors() {
        for (bad, want) in [
            (quote!(max_tokens 64), "expected `max_tokens = value`"),
            (quote!(max_tokens = 'x'), "expected a string, integer"),
            (quote!(a = 1, a = 2), "duplicate key `a`"),
            (quote!(graphs(a = 1, a = 2)), "duplicate key `graphs.a`"),
            (
                quote!(config = 4),
                "`config` takes a bundled layout's name or the path",
            ),
            (
                quote!(max_tokens = foo),
                "expected a literal value for `max_tokens`",
            ),
        ] {
            let e = parse(bad).err().unwrap().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
