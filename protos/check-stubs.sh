#!/usr/bin/env bash
# Generate one language's stubs from the lattice.v1 contract and, with --check,
# compile them: TypeScript with tsc (strict, no emit), Java with javac.
# One language per run, so a missing plugin or compiler fails only its language.
#
#   protos/check-stubs.sh go|ts|java [--check]
#
# Java classpath: $LATTICE_JAVA_CLASSPATH, else the Debian jars from
# libprotobuf-java and libgrpc-java (make java-stub-tools installs them with the plugin).
set -euo pipefail
cd "$(dirname "$0")"
lang=${1:?usage: check-stubs.sh go|ts|java [--check]}
check=${2:-}
buf=../node_modules/.bin/buf
die() { echo "stubs-$lang: $*" >&2; exit 1; }
[ -x "$buf" ] || die "no buf CLI at $buf: run 'npm ci' at the repository root"

case "$lang" in
ts)
  ts_tools=../tools/stubs-ts
  if [ ! -x "$ts_tools/node_modules/.bin/protoc-gen-ts_proto" ]; then
    npm ci --prefix "$ts_tools" --no-audit --no-fund --loglevel=error
  fi
  "$buf" generate --template buf.gen.ts.yaml
  if [ "$check" = --check ]; then
    "$ts_tools/node_modules/.bin/tsc" -p "$ts_tools"
    echo "stubs-ts: $(find "$ts_tools/gen" -name '*.ts' | wc -l) files type-check (tsc --strict)"
  fi
  ;;
java)
  command -v protoc >/dev/null || die "no protoc on PATH (Debian: apt-get install protobuf-compiler)"
  links=$(mktemp -d)
  trap 'rm -rf "$links"' EXIT
  if ! command -v protoc-gen-grpc-java >/dev/null; then
    # Debian's protobuf-compiler-grpc-java-plugin names it grpc_java_plugin.
    plugin=$(command -v grpc_java_plugin) ||
      die "no protoc-gen-grpc-java on PATH (Maven Central io.grpc:protoc-gen-grpc-java, or Debian: apt-get install protobuf-compiler-grpc-java-plugin)"
    ln -s "$plugin" "$links/protoc-gen-grpc-java"
    PATH="$links:$PATH"
  fi
  "$buf" generate --template buf.gen.java.yaml
  if [ "$check" = --check ]; then
    command -v javac >/dev/null || die "no javac (Debian: apt-get install default-jdk-headless)"
    classpath=${LATTICE_JAVA_CLASSPATH:-}
    if [ -z "$classpath" ]; then
      # geronimo-annotation: javax.annotation.Generated, which grpc-java < 1.42 emits.
      for jar in protobuf grpc-api grpc-stub grpc-protobuf grpc-protobuf-lite guava \
        geronimo-annotation-1.3-spec; do
        [ -f "/usr/share/java/$jar.jar" ] ||
          die "no /usr/share/java/$jar.jar: set LATTICE_JAVA_CLASSPATH or apt-get install libprotobuf-java libgrpc-java"
        classpath="$classpath${classpath:+:}/usr/share/java/$jar.jar"
      done
    fi
    find gen/java -name '*.java' >"$links/sources"
    javac -nowarn -d "$links/classes" -cp "$classpath" @"$links/sources"
    echo "stubs-java: $(wc -l <"$links/sources") files compile (javac $(javac -version 2>&1 | cut -d' ' -f2))"
  fi
  ;;
go)
  for plugin in protoc-gen-go protoc-gen-go-grpc; do
    command -v "$plugin" >/dev/null ||
      die "no $plugin on PATH (go install ...; see buf.gen.go.yaml)"
  done
  "$buf" generate --template buf.gen.go.yaml
  [ "$check" = --check ] && die "no compile check for Go: it needs a Go module with grpc-go and protobuf-go (not set up here)"
  ;;
*) die "unknown language (go, ts or java)" ;;
esac
