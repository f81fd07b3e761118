package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/icebox-rtc/icebox/httpapi"
)

// envPrefix starts every environment variable icebox reads: ICEBOX_<SECTION>_<KEY>.
const envPrefix = "ICEBOX"

// defaultConfigPaths are tried in order when --config is not given.
var defaultConfigPaths = []string{"icebox.yaml", "/etc/icebox/icebox.yaml"}

// configKey is one leaf of Config: its dotted name, where it lives in the struct, and whether
// its value is a secret ("true": hide it; "url": hide the password in it).
type configKey struct {
	name   string
	index  []int
	typ    reflect.Type
	secret string
}

// envName is the environment variable that sets the key.
func (k configKey) envName() string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(k.name, ".", "_"))
}

// fileEnvName is the environment variable naming a file that holds a secret key's value
// (ICEBOX_CREDENTIALS_SECRETS_FILE): a Kubernetes Secret or systemd credential mounted as a file,
// read again on every reload.
func (k configKey) fileEnvName() string { return k.envName() + "_FILE" }

// secretFiles reads the values of the secret keys whose ICEBOX_<KEY>_FILE is set: the file's
// content, trimmed; for a list, one item per line or comma. It returns them as a tree to merge
// like a config file's, and the files read.
func secretFiles(keys []configKey) (tree map[string]any, files []string, problems []error) {
	tree = map[string]any{}
	for _, k := range keys {
		path, ok := os.LookupEnv(k.fileEnvName())
		if k.secret == "" || !ok {
			continue
		}
		if _, both := os.LookupEnv(k.envName()); both {
			problems = append(problems, fmt.Errorf("%s: set by both %s and %s; keep one", k.name, k.envName(), k.fileEnvName()))
			continue
		}
		raw, err := os.ReadFile(path) //nolint:gosec // the operator names the file
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: %s: %w", k.name, k.fileEnvName(), err))
			continue
		}
		files = append(files, path)
		var value any = strings.TrimSpace(string(raw))
		if k.typ.Kind() == reflect.Slice {
			items := []string{}
			for _, f := range strings.FieldsFunc(string(raw), func(r rune) bool { return r == '\n' || r == ',' }) {
				if f = strings.TrimSpace(f); f != "" {
					items = append(items, f)
				}
			}
			value = items
		}
		node := tree
		parts := strings.Split(k.name, ".")
		for _, section := range parts[:len(parts)-1] {
			if node[section] == nil {
				node[section] = map[string]any{}
			}
			node = node[section].(map[string]any)
		}
		node[parts[len(parts)-1]] = value
	}
	return tree, files, problems
}

// configKeys lists every key of Config in declaration order, derived from the mapstructure tags,
// so defaults, environment variables and flags can never miss one.
func configKeys() []configKey {
	var keys []configKey
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			name := f.Tag.Get("mapstructure")
			if name == "" || name == "-" {
				continue
			}
			idx := append(append([]int(nil), index...), i)
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]() {
				walk(f.Type, prefix+name+".", idx)
				continue
			}
			keys = append(keys, configKey{name: prefix + name, index: idx, typ: f.Type, secret: f.Tag.Get("secret")})
		}
	}
	walk(reflect.TypeFor[Config](), "", nil)
	return keys
}

// configError is invalid configuration or usage: icebox exits 2 with its message.
type configError struct{ problems []string }

func (e *configError) Error() string {
	if len(e.problems) == 1 {
		return "invalid configuration: " + e.problems[0]
	}
	return "invalid configuration:\n  " + strings.Join(e.problems, "\n  ")
}

func newConfigError(errs ...error) error {
	ce := &configError{}
	for _, err := range errs {
		for _, e := range flattenErrors(err) {
			ce.problems = append(ce.problems, e.Error())
		}
	}
	if len(ce.problems) == 0 {
		return nil
	}
	return ce
}

// loadSources says where configuration comes from besides the built-in defaults.
type loadSources struct {
	// file is --config; "" searches defaultConfigPaths.
	file string
	// flags holds one flag per key (addKeyFlags); only flags set on the command line count.
	flags *pflag.FlagSet
	// search is where to look for a file without --config; nil means defaultConfigPaths.
	search []string
}

// loaded is the outcome of loadConfig.
type loaded struct {
	cfg      Config
	compiled compiled
	// file is the config file read, "" when none; files are every file read (the config file
	// and those of ICEBOX_<KEY>_FILE), which a reload reads again.
	file  string
	files []string
	// warnings are problems worth logging that do not stop icebox (unknown ICEBOX_* variables).
	warnings []string
}

// loadConfig reads the configuration once: built-in defaults < YAML file < ICEBOX_* environment
// < flags, decodes it strictly into Config and validates it. Every error is a *configError.
func loadConfig(src loadSources) (loaded, error) {
	keys := configKeys()
	v := viper.NewWithOptions(viper.KeyDelimiter("."))

	// A default for every key: viper reads the environment only for keys it knows.
	def := reflect.ValueOf(DefaultConfig())
	for _, k := range keys {
		v.SetDefault(k.name, def.FieldByIndex(k.index).Interface())
	}

	var out loaded
	var problems []error // reported together, with the decoding and validation problems
	file, err := findConfigFile(src.file, src.search)
	if err != nil {
		return out, newConfigError(err)
	}
	if file != "" {
		tree, unknown, err := readConfigFile(file, keys)
		if err != nil {
			return out, newConfigError(err)
		}
		problems = append(problems, unknown...)
		if err := v.MergeConfigMap(tree); err != nil {
			return out, newConfigError(fmt.Errorf("%s: %w", file, err))
		}
		out.file = file
		out.files = append(out.files, file)
	}
	// Secret keys from files (ICEBOX_<KEY>_FILE): above the config file, below the environment
	// and flags.
	secrets, files, bad := secretFiles(keys)
	if len(bad) > 0 {
		return out, newConfigError(bad...)
	}
	if err := v.MergeConfigMap(secrets); err != nil {
		return out, newConfigError(err)
	}
	out.files = append(out.files, files...)

	// ICEBOX_<SECTION>_<KEY>, bound key by key; an empty value counts (udp_listen "" disables).
	v.AllowEmptyEnv(true)
	known := map[string]bool{}
	for _, k := range keys {
		known[k.envName()] = true
		if k.secret != "" {
			known[k.fileEnvName()] = true
		}
		if err := v.BindEnv(k.name, k.envName()); err != nil {
			return out, newConfigError(err)
		}
	}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix+"_") && !known[name] {
			out.warnings = append(out.warnings, fmt.Sprintf("environment variable %s is not an icebox setting; ignored%s", name, suggestEnv(name, keys)))
		}
	}
	sort.Strings(out.warnings)

	// Flags win over everything; viper takes a flag's value only when it was set.
	if src.flags != nil {
		for _, k := range keys {
			if f := src.flags.Lookup(k.name); f != nil {
				if err := v.BindPFlag(k.name, f); err != nil {
					return out, newConfigError(err)
				}
			}
		}
	}

	var cfg Config
	decoded := map[string]bool{} // keys whose value could not be decoded
	if err := v.UnmarshalExact(&cfg, func(dc *mapstructure.DecoderConfig) {
		dc.WeaklyTypedInput = false // "true" is not a number, 10 is not a duration
		dc.DecodeHook = decodeValue
		dc.ErrorUnused = true
	}); err != nil {
		for _, e := range decodeErrors(err) {
			problems = append(problems, e)
			key, _, _ := strings.Cut(e.Error(), ":")
			decoded[key] = true
		}
	}
	// Every other problem too, at once: the keys that did not decode hold a zero value, so what
	// the checks say of them is left out.
	comp, err := cfg.compile()
	for _, e := range flattenErrors(err) {
		if key, _, _ := strings.Cut(e.Error(), ":"); !decoded[key] {
			problems = append(problems, e)
		}
	}
	if len(problems) > 0 {
		return out, newConfigError(problems...)
	}
	out.cfg, out.compiled = cfg, comp
	return out, nil
}

// findConfigFile resolves --config, else the first file of search that exists.
func findConfigFile(flag string, search []string) (string, error) {
	if flag != "" {
		if _, err := os.Stat(flag); err != nil {
			return "", fmt.Errorf("--config %s: %w", flag, errors.Unwrap(err))
		}
		return flag, nil
	}
	if search == nil {
		search = defaultConfigPaths
	}
	for _, p := range search {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("config file %s: %w", p, err)
		}
	}
	return "", nil
}

// readConfigFile parses the YAML file, names its unknown keys by their full name (and leaves
// them out), and drops empty values, so that a section left empty ("turn:") keeps its defaults
// instead of hiding them. A file that is not YAML is an error, with the lines around the one
// the parser names.
func readConfigFile(path string, keys []configKey) (map[string]any, []error, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config file %s: %w", path, err)
	}
	var tree map[string]any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return nil, nil, fmt.Errorf("config file %s: not valid YAML: %w%s", path, err, yamlContext(err, data))
	}
	leaves := map[string]bool{}
	sections := map[string]bool{}
	for _, k := range keys {
		leaves[k.name] = true
		for i := range k.name {
			if k.name[i] == '.' {
				sections[k.name[:i]] = true
			}
		}
	}
	var errs []error
	var clean func(m map[string]any, prefix string) map[string]any
	clean = func(m map[string]any, prefix string) map[string]any {
		out := map[string]any{}
		for rawKey, val := range m {
			key := strings.ToLower(rawKey)
			name := prefix + key
			switch {
			case leaves[name]:
				if sub, ok := val.(map[string]any); ok && sub != nil {
					errs = append(errs, fmt.Errorf("%s: expected a value, got a section", name))
					continue
				}
				if val != nil {
					out[key] = val
				}
			case sections[name]:
				switch sub := val.(type) {
				case nil:
				case map[string]any:
					out[key] = clean(sub, name+".")
				default:
					errs = append(errs, fmt.Errorf("%s: expected a section of keys, got %v", name, val))
				}
			default:
				what := "key"
				if _, ok := val.(map[string]any); ok && prefix == "" {
					what = "section"
				}
				errs = append(errs, fmt.Errorf("%s: unknown %s in %s%s", name, what, path, suggest(name, keys, sections)))
			}
		}
		return out
	}
	tree = clean(tree, "")
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return tree, errs, nil
}

// yamlContext quotes the lines around the line a YAML error names (the parser names where a
// block started; the mistake is often on the next line), marking tabs, which YAML refuses.
func yamlContext(err error, data []byte) string {
	m := regexp.MustCompile(`line (\d+)`).FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	n, _ := strconv.Atoi(m[1])
	lines := strings.Split(string(data), "\n")
	var b strings.Builder
	for i := max(n-1, 1); i <= min(n+1, len(lines)); i++ {
		line := lines[i-1]
		hint := ""
		if strings.Contains(line, "\t") {
			hint = "   <- a tab: YAML indents with spaces"
		}
		fmt.Fprintf(&b, "\n    %4d | %s%s", i, strings.ReplaceAll(line, "\t", "→"), hint)
	}
	return b.String()
}

// suggest names a known key or section close to an unknown one: a typo, or a key put in the
// wrong section.
func suggest(name string, keys []configKey, sections map[string]bool) string {
	if !strings.Contains(name, ".") {
		best, bestDist := "", 3
		for s := range sections {
			if d := editDistance(name, s); d < bestDist || (d == bestDist && s < best) {
				best, bestDist = s, d
			}
		}
		if best != "" {
			return fmt.Sprintf(" (did you mean %s?)", best)
		}
	}
	leaf := name[strings.LastIndex(name, ".")+1:]
	best, bestDist := "", 3
	for _, k := range keys {
		kleaf := k.name[strings.LastIndex(k.name, ".")+1:]
		if kleaf == leaf {
			return fmt.Sprintf(" (did you mean %s?)", k.name)
		}
		if d := editDistance(name, k.name); d < bestDist {
			best, bestDist = k.name, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %s?)", best)
	}
	return ""
}

// suggestEnv names the ICEBOX_* variable closest to an unknown one.
func suggestEnv(name string, keys []configKey) string {
	best, bestDist := "", 4
	for _, k := range keys {
		if d := editDistance(name, k.envName()); d < bestDist {
			best, bestDist = k.envName(), d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %s?)", best)
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	prefixesType = reflect.TypeFor[[]netip.Prefix]()
)

// decodeValue converts what YAML, the environment and flags give (strings, YAML scalars, lists)
// into the types of Config, strictly and with messages a user understands. Lists from the
// environment or flags are comma-separated.
func decodeValue(from reflect.Type, to reflect.Type, data any) (any, error) {
	if data == nil {
		return data, nil
	}
	s, isString := data.(string)
	s = strings.TrimSpace(s)
	switch {
	case to == durationType:
		switch d := data.(type) {
		case time.Duration:
			return d, nil
		case string:
			dur, err := time.ParseDuration(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not a duration (e.g. 30s, 10m, 24h)", d)
			}
			return dur, nil
		case int, int64, uint64, float64:
			if fmt.Sprint(d) == "0" {
				return time.Duration(0), nil
			}
			return nil, fmt.Errorf("%v has no unit: write e.g. %vs or %vm", d, d, d)
		}
		return nil, fmt.Errorf("%v is not a duration (e.g. 30s, 10m, 24h)", data)
	case to.Kind() == reflect.Bool:
		switch {
		case isString:
			b, err := strconv.ParseBool(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not true or false", data)
			}
			return b, nil
		case from.Kind() == reflect.Bool:
			return data, nil
		}
		return nil, fmt.Errorf("%v is not true or false", data)
	case to.Kind() == reflect.Int:
		switch {
		case isString:
			n, err := strconv.Atoi(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not a whole number", data)
			}
			return n, nil
		case from.Kind() == reflect.Float64:
			f := data.(float64)
			if f != float64(int(f)) {
				return nil, fmt.Errorf("%v is not a whole number", f)
			}
			return int(f), nil
		case from.Kind() >= reflect.Int && from.Kind() <= reflect.Uint64:
			return data, nil
		}
		return nil, fmt.Errorf("%v is not a whole number", data)
	case to.Kind() == reflect.Float64:
		switch {
		case isString:
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, fmt.Errorf("%q is not a number", data)
			}
			return f, nil
		case from.Kind() >= reflect.Int && from.Kind() <= reflect.Float64:
			return data, nil
		}
		return nil, fmt.Errorf("%v is not a number", data)
	case to.Kind() == reflect.String:
		switch from.Kind() {
		case reflect.String:
			return s, nil
		case reflect.Bool, reflect.Int, reflect.Int64, reflect.Uint64, reflect.Float64:
			return fmt.Sprint(data), nil // realm: 123 is still a string
		}
		return nil, fmt.Errorf("expected a single value, got %v", data)
	case to == prefixesType:
		// CIDR lists are parsed here, once, with the key's name on any error.
		if ps, ok := data.([]netip.Prefix); ok { // a default
			return ps, nil
		}
		list, err := decodeValue(from, reflect.TypeFor[[]string](), data)
		if err != nil {
			return nil, err
		}
		return httpapi.ParseCIDRs(list.([]string))
	case to.Kind() == reflect.Slice && to.Elem().Kind() == reflect.String:
		if isString {
			out := []string{}
			for _, part := range strings.Split(s, ",") {
				if part = strings.TrimSpace(part); part != "" {
					out = append(out, part)
				}
			}
			return out, nil
		}
		if from.Kind() != reflect.Slice {
			return nil, fmt.Errorf("expected a list, got %v", data)
		}
		rv := reflect.ValueOf(data)
		out := make([]string, 0, rv.Len())
		for i := range rv.Len() {
			switch e := rv.Index(i).Interface().(type) {
			case string:
				out = append(out, strings.TrimSpace(e))
			case bool, int, int64, uint64, float64:
				out = append(out, fmt.Sprint(e))
			default:
				return nil, fmt.Errorf("entry %d of the list is %v, not a single value", i+1, e)
			}
		}
		return out, nil
	}
	return data, nil
}

// decodeErrors turns mapstructure's errors into "key: problem" lines, one per key: its error
// tree nests joined errors (one per struct field) inside named DecodeErrors, and a hook's error
// inside another DecodeError of the same name.
func decodeErrors(err error) []error {
	var out []error
	var walk func(name string, err error)
	walk = func(name string, err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(name, e)
			}
			return
		}
		if de, ok := err.(*mapstructure.DecodeError); ok {
			walk(de.Name(), de.Unwrap())
			return
		}
		if u, ok := err.(interface{ Unwrap() error }); ok && u.Unwrap() != nil {
			walk(name, u.Unwrap()) // viper's "decoding failed ..." around the tree
			return
		}
		if name == "" {
			out = append(out, err)
			return
		}
		out = append(out, fmt.Errorf("%s: %v", name, err))
	}
	walk("", err)
	return out
}
