package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// helmSchemaFile is the Helm chart's values schema: helm lint, template and install refuse
// values it does not allow, so a typo such as config.turn.relam fails at render time, not as a
// pod in CrashLoopBackOff.
var helmSchemaFile = filepath.Join("..", "..", "deploy", "helm", "icebox", "values.schema.json")

// configSchema is the schema of the chart's config value: icebox's own keys (configKeys), the
// secret ones left out (they come from the chart's Secret, never a ConfigMap).
func configSchema() map[string]any {
	root := map[string]any{"type": "object", "additionalProperties": false, "properties": map[string]any{}}
	for _, k := range configKeys() {
		if k.secret != "" {
			continue
		}
		node := root
		parts := strings.Split(k.name, ".")
		for _, section := range parts[:len(parts)-1] {
			props := node["properties"].(map[string]any)
			if props[section] == nil {
				props[section] = map[string]any{"type": "object", "additionalProperties": false, "properties": map[string]any{}}
			}
			node = props[section].(map[string]any)
		}
		node["properties"].(map[string]any)[parts[len(parts)-1]] = keySchema(k.typ)
	}
	return root
}

func keySchema(t reflect.Type) map[string]any {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return map[string]any{"type": "string", "pattern": `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$|^0$`}
	case t.Kind() == reflect.Slice:
		return map[string]any{"type": "array", "items": keySchema(t.Elem())}
	case t.Kind() == reflect.Bool:
		return map[string]any{"type": "boolean"}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return map[string]any{"type": "integer"}
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return map[string]any{"type": "number"}
	}
	return map[string]any{"type": "string"}
}

// TestHelmSchema: the chart's values schema allows exactly icebox's configuration keys under
// config (with their types); e2e's TestHelmSchemaRefusesTypos has helm use it.
// ICEBOX_UPDATE_SCHEMA=1 rewrites the config part from the keys.
func TestHelmSchema(t *testing.T) {
	raw, err := os.ReadFile(helmSchemaFile)
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatalf("%s: %v", helmSchemaFile, err)
	}
	props := schema["properties"].(map[string]any)
	want := configSchema()
	if os.Getenv("ICEBOX_UPDATE_SCHEMA") != "" {
		props["config"] = want
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(schema); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(helmSchemaFile, b.Bytes(), 0o644); err != nil { //nolint:gosec // a file of the repository
			t.Fatal(err)
		}
		return
	}
	got, _ := json.Marshal(props["config"])
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(got, wantJSON) {
		t.Errorf("values.schema.json's config does not match icebox's keys; rerun with ICEBOX_UPDATE_SCHEMA=1")
	}
}
