# Sourced by cluster.sh and node.sh: the TLS and auth flags of a local
# cluster whose $DATA holds certs/ (made by 'make cluster-tls').

# sec_init makes the certificates and tokens once: a CA and a certificate
# per node and for the proxy under $DATA/certs, an auth file, and the
# secrets of its tokens under $DATA/tokens (mode 0600), for trying the
# cluster out.
sec_init() {
	if [ ! -f "$DATA/certs/ca.crt" ]; then
		"$BIN" certs init --dir "$DATA/certs" --nodes n1,n2,n3 >/dev/null
	fi
	if [ ! -f "$DATA/auth.json" ]; then
		mkdir -p "$DATA/tokens"
		chmod 700 "$DATA/tokens"
		for t in admin:operator app:write reader:read proxy:read; do
			(umask 077; "$BIN" token create "${t%%:*}" --role "${t##*:}" --auth-file "$DATA/auth.json" \
				>"$DATA/tokens/${t%%:*}" 2>/dev/null)
		done
	fi
}

secured() { [ -f "$DATA/certs/ca.crt" ]; }

# node_flags N: the flags of node nN.
node_flags() {
	secured || return 0
	echo --tls-cert "$DATA/certs/n$1.crt" --tls-key "$DATA/certs/n$1.key" --tls-ca "$DATA/certs/ca.crt" \
		--auth-file "$DATA/auth.json"
}

proxy_flags() {
	secured || return 0
	echo --tls-cert "$DATA/certs/proxy.crt" --tls-key "$DATA/certs/proxy.key" --tls-ca "$DATA/certs/ca.crt" \
		--auth-file "$DATA/auth.json" --token "$(cat "$DATA/tokens/proxy")"
}

# curl_ok PATH ADDR: a 2xx answer from ADDR, with TLS and the reader's
# token when the cluster is secured.
curl_ok() {
	if secured; then
		curl -sf --cacert "$DATA/certs/ca.crt" -H "Authorization: Bearer $(cat "$DATA/tokens/reader")" "https://$2$1" >/dev/null 2>&1
	else
		curl -sf "http://$2$1" >/dev/null 2>&1
	fi
}
