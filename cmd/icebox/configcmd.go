package main

import (
	"fmt"
	"io"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/icebox-rtc/icebox/signaling"
)

func newConfigCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Inspect the configuration",
	}
	printCmd := &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration (secrets redacted) as YAML",
		Long: `Print the configuration icebox would run with, after the built-in defaults, the
config file, ICEBOX_* environment variables and flags, as YAML. Secrets are redacted;
public_host and public_ip show the detected values when they are not set.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(printCmd)
	printCmd.RunE = func(*cobra.Command, []string) error {
		l, err := cf.load()
		if err != nil {
			return err
		}
		for _, w := range l.warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
		out, err := renderConfig(l.cfg, resolvePublicAddrs(l.cfg, interfaceAddrs), l.file)
		if err != nil {
			return &runtimeError{err}
		}
		_, err = stdout.Write(out)
		return err
	}
	cmd.AddCommand(printCmd)
	return cmd
}

func defaultValue(k configKey) reflect.Value {
	return reflect.ValueOf(DefaultConfig()).FieldByIndex(k.index)
}

// formatValue renders a value as it is written in the configuration; redact hides secrets.
func formatValue(k configKey, v reflect.Value, redact bool) string {
	switch x := v.Interface().(type) {
	case time.Duration:
		return formatDuration(x)
	case []netip.Prefix:
		return formatValue(k, reflect.ValueOf(prefixStrings(x)), redact)
	case []string:
		parts := make([]string, len(x))
		for i, s := range x {
			if redact && k.secret != "" {
				s = "<redacted>"
			}
			parts[i] = s
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case string:
		if redact && x != "" {
			switch k.secret {
			case "true":
				return "<redacted>"
			case "url":
				return signaling.RedactURL(x)
			}
		}
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v.Interface())
}

// formatDuration writes 24h rather than 24h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// renderConfig writes cfg as YAML in the order of configs/icebox.yaml, secrets redacted.
func renderConfig(cfg Config, public publicAddrs, file string) ([]byte, error) {
	doc := &yaml.Node{Kind: yaml.MappingNode}
	if file != "" {
		doc.HeadComment = "icebox configuration, loaded from " + file + " (secrets redacted)"
	} else {
		doc.HeadComment = "icebox configuration: built-in defaults, environment and flags (secrets redacted)"
	}
	sections := map[string]*yaml.Node{}
	root := reflect.ValueOf(cfg)
	for _, k := range configKeys() {
		parent := doc
		name := k.name
		if sec, leaf, ok := strings.Cut(k.name, "."); ok {
			if sections[sec] == nil {
				sections[sec] = &yaml.Node{Kind: yaml.MappingNode}
				doc.Content = append(doc.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: sec}, sections[sec])
			}
			parent, name = sections[sec], leaf
		}
		val := valueNode(k, root.FieldByIndex(k.index))
		switch {
		case k.name == "public_host" && public.HostDetected:
			val = &yaml.Node{Kind: yaml.ScalarNode, Value: public.Host, LineComment: "detected"}
		case k.name == "public_ip" && public.IPDetected:
			val = &yaml.Node{Kind: yaml.ScalarNode, Value: public.IP.String(), LineComment: "detected"}
		}
		parent.Content = append(parent.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: name}, val)
	}
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

// prefixStrings writes CIDRs as the configuration does.
func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func valueNode(k configKey, v reflect.Value) *yaml.Node {
	if ps, ok := v.Interface().([]netip.Prefix); ok {
		v = reflect.ValueOf(prefixStrings(ps))
	}
	if list, ok := v.Interface().([]string); ok {
		n := &yaml.Node{Kind: yaml.SequenceNode}
		if len(list) == 0 {
			n.Style = yaml.FlowStyle
		}
		for _, s := range list {
			if k.secret != "" {
				s = "<redacted>"
			}
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Style: yaml.DoubleQuotedStyle, Value: s})
		}
		return n
	}
	n := &yaml.Node{Kind: yaml.ScalarNode, Value: formatValue(k, v, true)}
	if v.Kind() == reflect.String {
		n.Style = yaml.DoubleQuotedStyle // ":8080" and "0.0.0.0" read as strings at a glance
	}
	return n
}
