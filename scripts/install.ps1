# Install gimp-openai on Windows: runs scripts\install.py with Python 3.10+ (the py launcher, else python).
# Usage: powershell -ExecutionPolicy Bypass -File scripts\install.ps1 [--dev] [--uninstall] [--gimp-dir DIR]
$ErrorActionPreference = "Stop"
$installer = Join-Path $PSScriptRoot "install.py"
$candidates = @(@("py", "-3"), @("python"), @("python3"))
foreach ($c in $candidates) {
    $exe = Get-Command $c[0] -ErrorAction SilentlyContinue
    if (-not $exe) { continue }
    $pre = @()
    if ($c.Length -gt 1) { $pre = $c[1..($c.Length - 1)] }
    & $exe.Source @pre -c "import sys; sys.exit(sys.version_info < (3, 10))" 2>$null
    if ($LASTEXITCODE -eq 0) {
        & $exe.Source @pre $installer @args
        exit $LASTEXITCODE
    }
}
Write-Error "install: needs Python 3.10 or newer from python.org (tick 'Add python.exe to PATH'), then run this again."
exit 1
