package main

import (
	"fmt"
	"io"
	"reflect"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "icebox",
		Short: "STUN/TURN relay, WebSocket signaling and TURN credentials for WebRTC, in one binary",
		Long: `icebox gives a WebRTC app everything it needs from the network side: a STUN/TURN
relay on UDP, TCP and TLS, a WebSocket signaling service with rooms, and time-limited
TURN credentials at GET /ice-config.

Start it with "icebox serve"; it runs with no configuration file at all.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newServeCmd(stdout, stderr),
		newCredentialsCmd(stdout, stderr),
		newTokenCmd(stdout, stderr),
		newCheckCmd(stdout),
		newConfigCmd(stdout, stderr),
		newVersionCmd(stdout),
	)
	return root
}

// configFlags are the flags of every command that loads the configuration: --config, and one
// flag per key (--turn.realm, --http.listen ...), which wins over the file and the environment.
type configFlags struct {
	file string
	keys *pflag.FlagSet
}

func addConfigFlags(cmd *cobra.Command) *configFlags {
	cf := &configFlags{keys: cmd.Flags()}
	cmd.Flags().StringVarP(&cf.file, "config", "c", "",
		"YAML configuration file (default: ./icebox.yaml, else /etc/icebox/icebox.yaml, if present)")
	for _, k := range configKeys() {
		usage := "sets " + k.name
		if def := formatValue(k, defaultValue(k), false); def != "" && def != "[]" {
			usage += fmt.Sprintf(" (default %s)", def)
		}
		if k.typ.Kind() == reflect.Slice {
			usage += "; comma-separated"
		}
		cmd.Flags().String(k.name, "", usage)
	}
	cmd.Flags().SortFlags = false
	return cf
}

func (cf *configFlags) load() (loaded, error) {
	return loadConfig(loadSources{file: cf.file, flags: cf.keys})
}
