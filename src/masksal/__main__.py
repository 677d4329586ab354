from masksal.cli import main

main()
