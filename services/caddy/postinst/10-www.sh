# Runs at build time with the image root as working directory: relative paths only.
mkdir -p var/www
cat > var/www/index.html <<HTML
<!doctype html>
<html><head><title>mksmolnb</title></head>
<body><h1>Hello from NetBSD</h1><p>Served by caddy from pkgsrc in a $SERVICE image for $ARCH.</p></body>
</html>
HTML
